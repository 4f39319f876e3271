package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

// `imsync token` with a --data that holds no server refuses and creates
// nothing: neither a missing directory nor a key in an existing one.
func TestTokenWrongDataCreatesNothing(t *testing.T) {
	empty := t.TempDir()
	missing := filepath.Join(t.TempDir(), "nope")
	for _, dir := range []string{empty, missing} {
		_, err := runCmd(t, "token", "--data", dir, "--user", "ann", "--device", "phone")
		if err == nil || !strings.Contains(err.Error(), "not the data directory of a server") || !strings.Contains(err.Error(), "--data") {
			t.Fatalf("token --data %s: %v", dir, err)
		}
		if _, err := runCmd(t, "token", "--data", dir, "--print-jwks"); err == nil {
			t.Fatalf("token --print-jwks --data %s printed a key", dir)
		}
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Fatalf("token created %v", entries)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("token created %s: %v", missing, err)
	}
}

// --hostname: the self-signed certificate covers the names, and a client
// that verifies the server by such a name connects. A certificate that
// lacks a requested name is refused until --new-cert replaces it.
func TestServeHostname(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	addr, _, stop := serveInProcess(t, serveArgs(t, data, "--listen", "127.0.0.1:0", "--hostname", "chat.example.test, 10.1.2.3")...)
	crt := filepath.Join(data, transport.CertFile)
	pemBytes, err := os.ReadFile(crt)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := runCmd(t, "token", "--data", data, "--user", "ann", "--device", "phone")
	if err != nil {
		t.Fatal(err)
	}
	tlsByName := func(pemBytes []byte, name string) *tls.Config {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pemBytes)
		return &tls.Config{RootCAs: pool, ServerName: name}
	}
	for _, name := range []string{"chat.example.test", "10.1.2.3", "localhost"} {
		c, err := client.Dial(context.Background(), client.Config{Addr: addr, Token: strings.TrimSpace(tok), TLS: tlsByName(pemBytes, name), NoReconnect: true})
		if err != nil {
			t.Fatalf("client verifying the server as %s: %v", name, err)
		}
		c.Close()
	}
	if _, err := client.Dial(context.Background(), client.Config{Addr: addr, Token: strings.TrimSpace(tok), TLS: tlsByName(pemBytes, "other.example.test"), NoReconnect: true}); err == nil {
		t.Fatal("a client verifying the server as a name it lacks connected")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// A name the certificate lacks: refused, naming --new-cert, and nothing changes.
	_, err = runCmd(t, serveArgs(t, data, "--listen", "127.0.0.1:0", "--hostname", "chat.example.test,new.example.test")...)
	if err == nil || !strings.Contains(err.Error(), "new.example.test") || !strings.Contains(err.Error(), "--new-cert") {
		t.Fatalf("serve with a name the certificate lacks: %v", err)
	}
	if now, _ := os.ReadFile(crt); string(now) != string(pemBytes) {
		t.Fatal("the refused start changed the certificate")
	}
	// With --new-cert it is replaced, the old pair kept aside.
	addr, _, stop = serveInProcess(t, serveArgs(t, data, "--listen", "127.0.0.1:0", "--hostname", "chat.example.test,new.example.test", "--new-cert")...)
	newPEM, _ := os.ReadFile(crt)
	if old, _ := os.ReadFile(crt + ".old"); string(old) != string(pemBytes) || string(newPEM) == string(pemBytes) {
		t.Fatal("the old certificate was not kept as server.crt.old, or not replaced")
	}
	c, err := client.Dial(context.Background(), client.Config{Addr: addr, Token: strings.TrimSpace(tok), TLS: tlsByName(newPEM, "new.example.test"), NoReconnect: true})
	if err != nil {
		t.Fatalf("client verifying the replaced certificate by its new name: %v", err)
	}
	c.Close()
	stop()

	for _, bad := range []string{"bad name!", ",", "-x.example"} {
		if _, err := runCmd(t, serveArgs(t, data, "--hostname", bad)...); !errors.Is(err, errUsage) {
			t.Errorf("--hostname %q: %v", bad, err)
		}
	}
	if _, err := runCmd(t, serveArgs(t, data, "--hostname", "a.example", "--cert", crt, "--key", filepath.Join(data, "server.key"))...); !errors.Is(err, errUsage) {
		t.Errorf("--hostname with --cert: %v", err)
	}
}

// edKeys are an app backend's signing keys by kid.
type edKeys map[string]ed25519.PrivateKey

func (k edKeys) add(kid string) { _, k[kid], _ = ed25519.GenerateKey(rand.Reader) }

func (k edKeys) writeJWKS(t *testing.T, path string, kids ...string) {
	t.Helper()
	var set []transport.JWK
	for _, kid := range kids {
		set = append(set, transport.PublicJWK(k[kid].Public().(ed25519.PublicKey), kid))
	}
	writeAtomically(t, path, transport.MarshalJWKS(set...))
}

func (k edKeys) mint(t *testing.T, kid, user, device string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"sub": user, "device": device, "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(), "aud": "chat"})
	tok.Header["kid"] = kid
	s, err := tok.SignedString(k[kid])
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeAtomically replaces path, as a deploy would (rename over it).
func writeAtomically(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// Key rotation and certificate renewal on a running `imsync serve`: after
// the JWKS file and the certificate files are rewritten and the process
// gets SIGHUP, tokens of the new key log in, tokens of the removed key are
// refused, clients pinning the new certificate connect, and a connection
// opened before stays up throughout. A broken JWKS on a later SIGHUP keeps
// the keys in use.
func TestServeSIGHUPReload(t *testing.T) {
	dir := t.TempDir()
	data, jwksPath := filepath.Join(dir, "data"), filepath.Join(dir, "jwks.json")
	certDir := filepath.Join(dir, "certs")
	if _, err := transport.LoadOrCreateCert(certDir); err != nil {
		t.Fatal(err)
	}
	crt, crtKey := filepath.Join(certDir, transport.CertFile), filepath.Join(certDir, "server.key")
	oldPEM, _ := os.ReadFile(crt)
	keys := edKeys{}
	keys.add("k1")
	keys.add("k2")
	keys.writeJWKS(t, jwksPath, "k1")

	port := freeUDPPort(t)
	args := serveArgs(t, data, "--listen", port, "--jwks", jwksPath, "--jwt-audience", "chat", "--cert", crt, "--key", crtKey)
	cmd := serveChildCmd(t, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	out := &syncBuffer{}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.Write([]byte(sc.Text() + "\n"))
		}
	}()
	waitOut := func(what string, n int) {
		t.Helper()
		for end := time.Now().Add(20 * time.Second); strings.Count(out.String(), what) < n; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("no %q (%d) in the output: %q", what, n, out.String())
			}
		}
	}
	waitOut("listening on", 1)

	pinned := func(pemBytes []byte) *tls.Config {
		cfg, err := client.PinnedTLS(pemBytes)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	dial := func(tok string, pemBytes []byte) (*client.Client, error) {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return client.Dial(c, client.Config{Addr: port, Token: tok, TLS: pinned(pemBytes), NoReconnect: true})
	}
	open, err := dial(keys.mint(t, "k1", "ann", "phone"), oldPEM)
	if err != nil {
		t.Fatalf("k1 before the rotation: %v", err)
	}
	defer open.Close()
	if _, err := dial(keys.mint(t, "k2", "ann", "tablet"), oldPEM); !errors.Is(err, client.ErrBadToken) {
		t.Fatalf("k2 before it is published: %v", err)
	}

	// Rotate: k2 replaces k1; a renewed certificate replaces the old one.
	keys.writeJWKS(t, jwksPath, "k2")
	renewed := t.TempDir()
	if _, err := transport.LoadOrCreateCert(renewed); err != nil {
		t.Fatal(err)
	}
	newPEM, _ := os.ReadFile(filepath.Join(renewed, transport.CertFile))
	newKey, _ := os.ReadFile(filepath.Join(renewed, "server.key"))
	writeAtomically(t, crtKey, newKey)
	writeAtomically(t, crt, newPEM)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitOut("reloaded jwks", 1)
	waitOut("reloaded the certificate", 1)
	c2, err := dial(keys.mint(t, "k2", "ann", "tablet"), newPEM)
	if err != nil {
		t.Fatalf("k2 after the rotation, pinning the new certificate: %v", err)
	}
	c2.Close()
	if _, err := dial(keys.mint(t, "k1", "ann", "laptop"), newPEM); !errors.Is(err, client.ErrBadToken) {
		t.Fatalf("k1 after it was removed: %v", err)
	}
	if _, err := dial(keys.mint(t, "k2", "ann", "laptop"), oldPEM); err == nil {
		t.Fatal("a client pinning the old certificate connected after the renewal")
	}
	// The connection of before is still the same one, and works.
	if err := open.Err(); err != nil {
		t.Fatalf("the open connection ended: %v", err)
	}
	if _, err := open.Send(context.Background(), client.Message{To: "bob", ClientMsgID: "after-rotation", Text: "still here"}); err != nil {
		t.Fatalf("send on the connection opened before the rotation: %v", err)
	}

	// A broken JWKS: the keys in use stay, the process lives on.
	writeAtomically(t, jwksPath, []byte(`{"keys":[{"kty":"RSA","kid":"r"}]}`))
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitOut("reloaded the certificate", 2) // the second SIGHUP was handled
	if c3, err := dial(keys.mint(t, "k2", "bob", "phone"), newPEM); err != nil {
		t.Fatalf("k2 after a broken JWKS was refused: %v", err)
	} else {
		c3.Close()
	}
	if strings.Count(out.String(), "reloaded jwks") != 1 {
		t.Fatalf("the broken JWKS was reported as loaded: %q", out.String())
	}
}

// freeUDPPort returns a loopback address whose UDP port was free a moment ago.
func freeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// `imsync token` mints JWTs that a server with the same data directory
// accepts; --print-jwks prints the development key's public JWKS, which a
// server without the data directory's key accepts as --jwks.
func TestTokenPrintJWKS(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	_, _, stop := serveInProcess(t, serveArgs(t, data, "--listen", "127.0.0.1:0")...)
	stop()
	tok, err := runCmd(t, "token", "--data", data, "--user", "ann", "--device", "phone", "--jwt-audience", "chat")
	if err != nil {
		t.Fatal(err)
	}
	jwksOut, err := runCmd(t, "token", "--data", data, "--print-jwks")
	if err != nil {
		t.Fatal(err)
	}
	set, err := transport.ParseJWKS([]byte(jwksOut))
	if err != nil {
		t.Fatalf("--print-jwks: %v\n%s", err, jwksOut)
	}
	key, _ := transport.LoadKey(data)
	if kids := set.Kids(); len(kids) != 1 || kids[0] != key.KID() {
		t.Fatalf("kids %v, want the development key's %s", kids, key.KID())
	}
	// Accepted by a server of another data directory (another development
	// key) through the printed JWKS alone.
	path := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(path, []byte(jwksOut), 0o644)
	other := filepath.Join(t.TempDir(), "other")
	addr, _, _ := serveInProcess(t, serveArgs(t, other, "--listen", "127.0.0.1:0", "--jwks", path, "--jwt-audience", "chat")...)
	c, err := client.Dial(context.Background(), client.Config{Addr: addr, Token: strings.TrimSpace(tok), TLS: client.InsecureTLS(), NoReconnect: true})
	if err != nil {
		t.Fatalf("the minted token against the printed JWKS: %v", err)
	}
	c.Close()

	// From PEM keys, as an app backend would hold them.
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	pemPath := filepath.Join(t.TempDir(), "backend.pem")
	os.WriteFile(pemPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	jwksOut, err = runCmd(t, "token", "--print-jwks", "--key", pemPath, "--kid", "backend-2026")
	if err != nil {
		t.Fatal(err)
	}
	if set, err := transport.ParseJWKS([]byte(jwksOut)); err != nil || strings.Join(set.Kids(), ",") != "backend-2026" || strings.Contains(jwksOut, `"d"`) {
		t.Fatalf("--print-jwks --key: %v\n%s", err, jwksOut)
	}
}

// The recipe of docs/tokens.md, run as written: an openssl key, its JWKS
// from `imsync token --print-jwks --key`, a server with --jwks and the
// aud/iss rules, and a token minted by the doc's dependency-free Node
// script logs in.
func TestDocsTokenRecipe(t *testing.T) {
	for _, tool := range []string{"openssl", "node"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "tokens.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```js\n(// mint\\.mjs\n.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("no mint.mjs block in docs/tokens.md")
	}
	dir := t.TempDir()
	script, pemPath := filepath.Join(dir, "mint.mjs"), filepath.Join(dir, "backend-2026-12.pem")
	os.WriteFile(script, m[1], 0o644)
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "ed25519", "-out", pemPath).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v %s", err, out)
	}
	jwks, err := runCmd(t, "token", "--print-jwks", "--key", pemPath, "--kid", "backend-2026-12")
	if err != nil {
		t.Fatal(err)
	}
	jwksPath := filepath.Join(dir, "jwks.json")
	os.WriteFile(jwksPath, []byte(jwks), 0o644)
	data := filepath.Join(dir, "data")
	addr, _, _ := serveInProcess(t, serveArgs(t, data, "--listen", "127.0.0.1:0", "--jwks", jwksPath, "--jwt-audience", "chat", "--jwt-issuer", "https://app.example")...)
	tok, err := exec.Command("node", script, pemPath, "backend-2026-12", "ann", "phone").Output()
	if err != nil {
		t.Fatalf("node mint.mjs: %v", err)
	}
	pemBytes, _ := os.ReadFile(filepath.Join(data, transport.CertFile))
	pinned, _ := client.PinnedTLS(pemBytes)
	c, err := client.Dial(context.Background(), client.Config{Addr: addr, Token: strings.TrimSpace(string(tok)), TLS: pinned, NoReconnect: true})
	if err != nil {
		t.Fatalf("the token of the documented Node script: %v", err)
	}
	defer c.Close()
	if w := c.Welcome(); w.User != "ann" || w.Device != "phone" {
		t.Fatalf("welcome %v", w)
	}
	// The development key's tokens need the same aud/iss.
	dev, err := runCmd(t, "token", "--data", data, "--user", "ann", "--device", "cli")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Dial(context.Background(), client.Config{Addr: addr, Token: strings.TrimSpace(dev), TLS: pinned, NoReconnect: true}); !errors.Is(err, client.ErrBadToken) {
		t.Fatalf("a dev token without aud/iss: %v", err)
	}
	dev, _ = runCmd(t, "token", "--data", data, "--user", "ann", "--device", "cli", "--jwt-audience", "chat", "--jwt-issuer", "https://app.example")
	c2, err := client.Dial(context.Background(), client.Config{Addr: addr, Token: strings.TrimSpace(dev), TLS: pinned, NoReconnect: true})
	if err != nil {
		t.Fatalf("a dev token with aud/iss: %v", err)
	}
	c2.Close()
}
