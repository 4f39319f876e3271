//go:build cluster

package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/transport/api"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/wire"
)

// TestClusterRevokeAndDisconnect: the server API of node 1 revokes a
// user's tokens and disconnects a device, and the other nodes act on it:
// the user's connection on node 2 is closed with code 102 and node 3
// refuses the old token (a new one logs in); the device connected to node
// 2 is closed with code 109.
func TestClusterRevokeAndDisconnect(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "api-key")
	const apiKey = "cluster-test-api-key-0123456789"
	if err := os.WriteFile(keyFile, []byte(apiKey), 0o600); err != nil {
		t.Fatal(err)
	}
	apis := make([]string, 3)
	began := time.Now()
	f := startClusterExtra(t, func(i int) []string {
		apis[i] = freeTCPAddr(t)
		return []string{"--api", apis[i], "--api-key", keyFile}
	})
	t.Logf("three nodes up in %s", time.Since(began).Round(time.Millisecond))
	post := func(node int, path string, out any) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+apis[node]+path, nil)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("POST %s on node %d: status %d", path, node+1, res.StatusCode)
		}
		if err := json.NewDecoder(res.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	issued := time.Now()
	dial := func(user, dev string, node int) (*client.Client, error) {
		tok, err := f.key.Mint(user, dev, time.Hour, issued)
		if err != nil {
			t.Fatal(err)
		}
		tlsConf, err := client.PinnedTLS(f.pem)
		if err != nil {
			t.Fatal(err)
		}
		var c *client.Client
		err = withTimeout(30*time.Second, func(ctx context.Context) error {
			c, err = client.Dial(ctx, client.Config{Addr: f.nodes[node].listen, Token: tok, TLS: tlsConf, NoReconnect: true})
			return err
		})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	tablet, err := dial("ann", "tablet", 1)
	if err != nil {
		t.Fatal(err)
	}
	phone, err := dial("bob", "phone", 1)
	if err != nil {
		t.Fatal(err)
	}

	// Disconnect through node 1, once: whether or not the device grain
	// node 1 asks knows the tablet yet (the members may still be finding
	// each other), node 2 reads the disconnect from the store and closes
	// it.
	var d api.Disconnected
	asked := time.Now()
	post(0, "/v1/users/ann/devices/tablet/disconnect", &d)
	if code := closedWith(t, tablet); code != wire.CodeDisconnected {
		t.Fatalf("ann's tablet on node 2 ended with code %d, want %d", code, wire.CodeDisconnected)
	}
	t.Logf("disconnect: %d connection closed on node 2, %s after it was asked on node 1", d.Closed, time.Since(asked).Round(time.Microsecond))

	var r api.Revoked
	asked = time.Now()
	post(0, "/v1/users/bob/revoke-tokens", &r)
	answered := time.Since(asked)
	if code := closedWith(t, phone); code != wire.CodeUnauthorized {
		t.Fatalf("bob's phone on node 2 ended with code %d, want %d", code, wire.CodeUnauthorized)
	}
	t.Logf("revocation: bob's phone on node 2 closed %s after it was asked on node 1 (which answered in %s, closing %d)",
		time.Since(asked).Round(time.Microsecond), answered.Round(time.Microsecond), r.Closed)
	// Node 3 refuses the old token once it has read the revocation.
	var we *wire.Error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := dial("bob", "laptop", 2)
		if errors.As(err, &we) && we.Code == wire.CodeUnauthorized {
			break
		}
		if err == nil {
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 3 with a token issued before the revocation: %v", err)
		}
	}
	issued = r.RevokedAt.Add(time.Second)
	if _, err := dial("bob", "laptop", 2); err != nil {
		t.Fatalf("node 3 with a token issued after the revocation: %v", err)
	}
}

// closedWith waits until c's connection ends and returns the server's
// close code.
func closedWith(t *testing.T, c *client.Client) uint32 {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case _, ok := <-c.Entries():
			if ok {
				continue
			}
			var we *wire.Error
			var app *quic.ApplicationError
			switch err := c.Err(); {
			case errors.As(err, &we):
				return we.Code
			case errors.As(err, &app):
				return uint32(app.ErrorCode)
			default:
				t.Fatalf("the connection ended with %v, no close code", err)
			}
		case <-deadline:
			t.Fatal("the connection was not closed")
		}
	}
}
