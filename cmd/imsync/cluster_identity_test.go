package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/transport"
)

// The identity check against the embedded store (events.Store, as the
// EventStoreDB backend): no gRPC, so these run under -race too.

func identityStore(t *testing.T) events.Store {
	t.Helper()
	s, err := events.Open(filepath.Join(t.TempDir(), "events"), events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func identityOf(data string) identityCheck {
	return identityCheck{cluster: "chat", advertise: "127.0.0.1:8101", data: data}
}

func checkIdentity(t *testing.T, store events.Store, c identityCheck) error {
	t.Helper()
	return checkClusterIdentity(context.Background(), store, c, slog.New(slog.DiscardHandler))
}

// identityRecords are the events of cluster chat's identity stream.
func identityRecords(t *testing.T, store events.Store) []events.RecordedEvent {
	t.Helper()
	evs, err := store.ReadStream(context.Background(), clusterIdentityStream("chat"), events.ReadStreamOptions{Limit: 100})
	if errors.Is(err, events.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// copyDataDir is `cp -r from to` of a data directory's files.
func copyDataDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestClusterIdentityFirstNodeRecords: the first node creates its secrets
// and records their fingerprints (never the secrets); a copy of its data
// directory passes the check, and so does the first node again; the
// stream keeps one record.
func TestClusterIdentityFirstNodeRecords(t *testing.T) {
	store := identityStore(t)
	root := t.TempDir()
	n1, n2 := filepath.Join(root, "n1"), filepath.Join(root, "n2")
	if err := checkIdentity(t, store, identityOf(n1)); err != nil {
		t.Fatalf("first node: %v", err)
	}
	for _, f := range []string{"token.key", transport.CertFile, "server.key", transport.ResetKeyFile} {
		if _, err := os.Stat(filepath.Join(n1, f)); err != nil {
			t.Fatalf("the first node did not create %s: %v", f, err)
		}
	}
	recs := identityRecords(t, store)
	if len(recs) != 1 || recs[0].Type != clusterIdentityType {
		t.Fatalf("identity stream: %d events (%v), want one %s", len(recs), recs, clusterIdentityType)
	}
	key, err := transport.LoadKey(n1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(recs[0].Data, []byte(key.KID())) || !bytes.Contains(recs[0].Data, []byte(`"recorded_by":"127.0.0.1:8101"`)) {
		t.Fatalf("the record does not name the key id %s and its node: %s", key.KID(), recs[0].Data)
	}
	var rec clusterIdentity
	if err := json.Unmarshal(recs[0].Data, &rec); err != nil {
		t.Fatal(err)
	}
	crt, err := os.ReadFile(filepath.Join(n1, transport.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(crt)
	if sum := sha256.Sum256(block.Bytes); rec.Certificate != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Fatalf("recorded certificate fingerprint %s, want the SHA-256 of server.crt %x", rec.Certificate, sum)
	}
	for _, f := range []string{"token.key", "server.key", transport.ResetKeyFile} {
		secret, err := os.ReadFile(filepath.Join(n1, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, enc := range []string{hex.EncodeToString(secret), base64.StdEncoding.EncodeToString(secret), base64.RawURLEncoding.EncodeToString(secret)} {
			if bytes.Contains(recs[0].Data, []byte(enc)) {
				t.Fatalf("the record holds the secret of %s: %s", f, recs[0].Data)
			}
		}
	}

	copyDataDir(t, n1, n2)
	c := identityOf(n2)
	c.advertise = "127.0.0.1:8102"
	if err := checkIdentity(t, store, c); err != nil {
		t.Fatalf("a copy of the first node's directory: %v", err)
	}
	if err := checkIdentity(t, store, identityOf(n1)); err != nil {
		t.Fatalf("the first node again: %v", err)
	}
	if n := len(identityRecords(t, store)); n != 1 {
		t.Fatalf("identity stream: %d records after the checks, want 1", n)
	}
	// Another cluster in the same store has a record of its own.
	other := identityOf(filepath.Join(root, "m1"))
	other.cluster = "other"
	if err := checkIdentity(t, store, other); err != nil {
		t.Fatalf("first node of another cluster: %v", err)
	}
}

// TestClusterIdentityFreshDirectoryRefused: a node whose data directory
// does not exist yet, in a cluster that has a record, is refused with a
// usage error naming every secret it lacks and the fix, and nothing is
// created.
func TestClusterIdentityFreshDirectoryRefused(t *testing.T) {
	store := identityStore(t)
	root := t.TempDir()
	if err := checkIdentity(t, store, identityOf(filepath.Join(root, "n1"))); err != nil {
		t.Fatal(err)
	}
	n4 := filepath.Join(root, "n4")
	err := checkIdentity(t, store, identityOf(n4))
	if !errors.Is(err, errClusterIdentity) || exitCode(err) != exitUsage {
		t.Fatalf("fresh directory: %v (exit %d), want a usage error (exit %d) about the cluster's secrets", err, exitCode(err), exitUsage)
	}
	for _, want := range []string{"token.key is missing", "server.crt and server.key are missing", "reset.key is missing", "cp -r n1 n4", "127.0.0.1:8101", "--cluster-reset-identity"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not say %q: %v", want, err)
		}
	}
	if _, err := os.Stat(n4); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused node created %s (%v)", n4, err)
	}
	if n := len(identityRecords(t, store)); n != 1 {
		t.Fatalf("identity stream: %d records, want 1", n)
	}
}

// TestClusterIdentityDifferentSecretRefused: a directory that differs in
// one secret is refused naming that one alone; one from another cluster
// names all three. --jwks leaves the token key out, --cert the certificate.
func TestClusterIdentityDifferentSecretRefused(t *testing.T) {
	store := identityStore(t)
	root := t.TempDir()
	n1 := filepath.Join(root, "n1")
	if err := checkIdentity(t, store, identityOf(n1)); err != nil {
		t.Fatal(err)
	}
	// other holds secrets of its own, for the files to swap in.
	other := filepath.Join(root, "other")
	if _, err := transport.LoadOrCreateKey(other); err != nil {
		t.Fatal(err)
	}
	if _, err := transport.LoadOrCreateCert(other); err != nil {
		t.Fatal(err)
	}
	if _, err := transport.LoadOrCreateResetKey(other); err != nil {
		t.Fatal(err)
	}
	all := []string{"token.key differs", "server.crt differs", "reset.key differs"}
	for i, tc := range []struct {
		name    string
		swap    []string // files taken from other
		jwks    bool
		ownCert bool
		want    []string // what the refusal names; none: the check passes
	}{
		{"token key", []string{"token.key"}, false, false, all[:1]},
		{"certificate", []string{transport.CertFile, "server.key"}, false, false, all[1:2]},
		{"reset key", []string{transport.ResetKeyFile}, false, false, all[2:]},
		{"another cluster's directory", []string{"token.key", transport.CertFile, "server.key", transport.ResetKeyFile}, false, false, all},
		{"token key with --jwks", []string{"token.key"}, true, false, nil},
		{"certificate with --cert", []string{transport.CertFile, "server.key"}, false, true, nil},
		{"reset key with --jwks and --cert", []string{transport.ResetKeyFile}, true, true, all[2:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(root, "case", string(rune('a'+i)))
			copyDataDir(t, n1, data)
			for _, f := range tc.swap {
				b, err := os.ReadFile(filepath.Join(other, f))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(data, f), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c := identityOf(data)
			c.jwks, c.ownCert = tc.jwks, tc.ownCert
			err := checkIdentity(t, store, c)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, errClusterIdentity) || exitCode(err) != exitUsage {
				t.Fatalf("%v (exit %d), want a usage error about the cluster's secrets", err, exitCode(err))
			}
			for _, s := range all {
				if named := strings.Contains(err.Error(), s); named != strings.Contains(strings.Join(tc.want, "|"), s) {
					t.Errorf("the refusal names %q: %v, want %v: %v", s, named, !named, err)
				}
			}
		})
	}
	if n := len(identityRecords(t, store)); n != 1 {
		t.Fatalf("identity stream: %d records, want 1", n)
	}
}

// TestClusterIdentityCertFlagCluster: when the first node serves a --cert
// certificate, a node that would serve its self-signed one is refused.
func TestClusterIdentityCertFlagCluster(t *testing.T) {
	store := identityStore(t)
	root := t.TempDir()
	c := identityOf(filepath.Join(root, "n1"))
	c.ownCert = true
	if err := checkIdentity(t, store, c); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "n1", transport.CertFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a node with --cert created a self-signed certificate (%v)", err)
	}
	n2 := filepath.Join(root, "n2")
	copyDataDir(t, filepath.Join(root, "n1"), n2)
	if _, err := transport.LoadOrCreateCert(n2); err != nil {
		t.Fatal(err)
	}
	err := checkIdentity(t, store, identityOf(n2))
	if !errors.Is(err, errClusterIdentity) || !strings.Contains(err.Error(), "--cert") {
		t.Fatalf("a self-signed node in a --cert cluster: %v, want a refusal that asks for --cert", err)
	}
	c.data = n2
	if err := checkIdentity(t, store, c); err != nil {
		t.Fatalf("the same node with --cert: %v", err)
	}
}

// raceStore makes the first n stream reads wait for each other, so that n
// first nodes all find no record before any appends its own.
type raceStore struct {
	events.Store
	mu      sync.Mutex
	waiting int
	release chan struct{}
}

func (s *raceStore) ReadStream(ctx context.Context, stream string, opts events.ReadStreamOptions) ([]events.RecordedEvent, error) {
	evs, err := s.Store.ReadStream(ctx, stream, opts)
	s.mu.Lock()
	if s.waiting > 0 {
		s.waiting--
		if s.waiting == 0 {
			close(s.release)
		}
	}
	s.mu.Unlock()
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return evs, err
}

// TestClusterIdentityRacingFirstNodes: first nodes with secrets of their
// own that all find no record append at once: one record is kept, one
// node starts, the others are refused.
func TestClusterIdentityRacingFirstNodes(t *testing.T) {
	const nodes = 4
	store := &raceStore{Store: identityStore(t), waiting: nodes, release: make(chan struct{})}
	root := t.TempDir()
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			errs[i] = checkIdentity(t, store, identityOf(filepath.Join(root, string(rune('a'+i)))))
		})
	}
	wg.Wait()
	started := 0
	for i, err := range errs {
		switch {
		case err == nil:
			started++
		case !errors.Is(err, errClusterIdentity):
			t.Errorf("node %d: %v, want a refusal", i, err)
		}
	}
	if started != 1 {
		t.Fatalf("%d nodes passed the check, want 1 (%v)", started, errs)
	}
	if n := len(identityRecords(t, store)); n != 1 {
		t.Fatalf("identity stream: %d records, want 1", n)
	}
}

// TestClusterIdentityReset: --cluster-reset-identity records the node's
// new secrets (here a new token key, --new-key) as the cluster's: copies
// of the old directory are refused afterwards, copies of the new pass.
func TestClusterIdentityReset(t *testing.T) {
	store := identityStore(t)
	root := t.TempDir()
	n1, old, fresh := filepath.Join(root, "n1"), filepath.Join(root, "old"), filepath.Join(root, "new")
	if err := checkIdentity(t, store, identityOf(n1)); err != nil {
		t.Fatal(err)
	}
	if err := markDataDir(n1); err != nil { // n1 has served
		t.Fatal(err)
	}
	copyDataDir(t, n1, old)
	if err := os.Remove(filepath.Join(n1, "token.key")); err != nil {
		t.Fatal(err)
	}
	// Without --new-key, the served directory's missing key is refused
	// rather than replaced, reset or not.
	c := identityOf(n1)
	c.reset = true
	if err := checkIdentity(t, store, c); !errors.Is(err, errDataDir) {
		t.Fatalf("reset of a served directory without its key: %v, want the data directory's refusal", err)
	}
	if transport.KeyExists(n1) {
		t.Fatal("the refused reset created a token key")
	}
	c.allow.key = true
	if err := checkIdentity(t, store, c); err != nil {
		t.Fatalf("reset with --new-key: %v", err)
	}
	if n := len(identityRecords(t, store)); n != 2 {
		t.Fatalf("identity stream: %d records after the reset, want 2", n)
	}
	copyDataDir(t, n1, fresh)
	if err := checkIdentity(t, store, identityOf(fresh)); err != nil {
		t.Fatalf("a copy of the reset node: %v", err)
	}
	if err := checkIdentity(t, store, identityOf(old)); !errors.Is(err, errClusterIdentity) || !strings.Contains(err.Error(), "token.key differs") {
		t.Fatalf("a copy from before the reset: %v, want a refusal naming token.key", err)
	}
}

// TestClusterIdentityNotARecord: a stream cluster-NAME that holds
// something else is reported, not overwritten.
func TestClusterIdentityNotARecord(t *testing.T) {
	store := identityStore(t)
	if _, err := store.AppendToStream(context.Background(), clusterIdentityStream("chat"), events.NoStream, events.EventData{Type: "Other", Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "n1")
	err := checkIdentity(t, store, identityOf(data))
	if err == nil || !strings.Contains(err.Error(), "not a cluster identity record") {
		t.Fatalf("a foreign stream: %v", err)
	}
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("created %s (%v)", data, err)
	}
}

// TestClusterIdentityResetNoop: --cluster-reset-identity on a node whose
// secrets already are the cluster's (the flag left in a unit file) writes
// no record and warns of no replacement; on a node whose secrets differ it
// replaces the record and says the flag should be removed.
func TestClusterIdentityResetNoop(t *testing.T) {
	store := identityStore(t)
	root := t.TempDir()
	n1, n2, other := filepath.Join(root, "n1"), filepath.Join(root, "n2"), filepath.Join(root, "other")
	if err := checkIdentity(t, store, identityOf(n1)); err != nil {
		t.Fatal(err)
	}
	copyDataDir(t, n1, n2)
	for _, dir := range []string{n1, n2} {
		if err := markDataDir(dir); err != nil { // both have served
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	for _, dir := range []string{n1, n2} {
		c := identityOf(dir)
		c.reset = true
		if err := checkClusterIdentity(context.Background(), store, c, logger); err != nil {
			t.Fatalf("reset on %s, whose secrets are the cluster's: %v", dir, err)
		}
	}
	if n := len(identityRecords(t, store)); n != 1 {
		t.Fatalf("identity stream: %d records after resets with the same secrets, want 1", n)
	}
	if strings.Contains(logs.String(), "replaced") || strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("a reset that changed nothing warned:\n%s", logs.String())
	}

	// A node with secrets of its own: the reset replaces the record.
	if err := checkIdentity(t, store, identityOf(other)); !errors.Is(err, errClusterIdentity) && !errors.Is(err, errDataDir) {
		t.Fatalf("a fresh directory without reset: %v, want a refusal", err)
	}
	logs.Reset()
	c := identityOf(other)
	c.reset = true
	if err := checkClusterIdentity(context.Background(), store, c, logger); err != nil {
		t.Fatalf("reset with other secrets: %v", err)
	}
	if n := len(identityRecords(t, store)); n != 2 {
		t.Fatalf("identity stream: %d records after a real reset, want 2", n)
	}
	if out := logs.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "now define the cluster") || !strings.Contains(out, "flag should be removed") {
		t.Fatalf("a replacing reset logged:\n%s", out)
	}
	if err := checkIdentity(t, store, identityOf(n1)); !errors.Is(err, errClusterIdentity) {
		t.Fatalf("the old secrets after the reset: %v, want a refusal", err)
	}
}
