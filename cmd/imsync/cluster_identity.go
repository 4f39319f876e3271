package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/grpclog"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/transport"
)

// The nodes of a cluster must share the secrets of their data directories
// (docs/cluster.md, "What the nodes share"): a node with its own token key
// refuses the others' tokens, with its own certificate every pinning
// client. So the first node to start records the fingerprints of its
// secrets in the store, in the stream cluster-NAME; every node compares
// its own before it joins, and refuses to start on a difference. Only
// fingerprints are stored, never the secrets.

// clusterIdentityPrefix names the identity streams: cluster-NAME.
const clusterIdentityPrefix = "cluster-"

// clusterIdentityType is the event type of an identity record (JSON).
const clusterIdentityType = "ClusterIdentity"

// clusterIdentityTimeout bounds the reads and the append of the check.
const clusterIdentityTimeout = 30 * time.Second

// errClusterIdentity wraps every refusal of the identity check.
var errClusterIdentity = errors.New("data directory does not hold this cluster's secrets")

// clusterIdentityStream is the stream that holds cluster name's identity.
func clusterIdentityStream(name string) string { return clusterIdentityPrefix + name }

// clusterIdentity is the record: fingerprints (sha256:HEX) of what every
// node must share, and who recorded them.
type clusterIdentity struct {
	Cluster string `json:"cluster"`
	// TokenKey is the fingerprint of the public half of token.key; TokenKid
	// its key id, which tokens name (both for the error message too).
	TokenKey string `json:"token_key"`
	TokenKid string `json:"token_kid"`
	// Certificate is the fingerprint of the self-signed server.crt, empty
	// when the recording node served a --cert certificate.
	Certificate string `json:"certificate,omitempty"`
	ResetKey    string `json:"reset_key"`
	// RecordedBy is the --advertise address of the recording node.
	RecordedBy string    `json:"recorded_by"`
	RecordedAt time.Time `json:"recorded_at"`
}

// identityCheck is what the check needs to know of the starting node.
type identityCheck struct {
	cluster   string
	advertise string
	data      string
	ownCert   bool         // --cert/--key: the certificate is not compared
	jwks      bool         // --jwks: the token key is not compared
	certHosts []string     // --hostname, for a certificate created here
	allow     dataDirAllow // --new-store, --new-key, --new-cert
	reset     bool         // --cluster-reset-identity
}

// checkClusterIdentity compares the secrets in c.data with the cluster's
// record in store and refuses (errClusterIdentity, a usage error: nothing
// was done) on a difference. Without a record, or with c.reset, it creates
// the secrets the directory lacks (a first start) and records them; of two
// nodes recording at once, one wins and the other is compared with it.
func checkClusterIdentity(ctx context.Context, store events.Store, c identityCheck, logger *slog.Logger) error {
	stream := clusterIdentityStream(c.cluster)
	rec, last, err := readClusterIdentity(ctx, store, stream)
	if err != nil {
		return err
	}
	if rec != nil && !c.reset {
		return c.compare(rec)
	}
	if rec != nil && c.sameAs(rec) {
		// --cluster-reset-identity on a node whose secrets are already the
		// cluster's (the flag left in a unit file): nothing to replace.
		logger.Info("--cluster-reset-identity: this node's secrets are already the cluster's identity: the record stays as it is; the flag can be removed",
			"cluster", c.cluster, "stream", stream)
		return nil
	}
	// A first start (or a reset): what --new-* and --hostname create comes
	// first, then the directory's own refusals, so that a missing key of a
	// used directory is never replaced here.
	if c.allow != (dataDirAllow{}) {
		if err := createAllowed(c.data, c.allow, c.ownCert, logger); err != nil {
			return err
		}
	}
	if len(c.certHosts) > 0 {
		if err := certForHosts(c.data, c.certHosts, c.allow.cert, logger); err != nil {
			return err
		}
	}
	dir, err := inspectDataDir(c.data)
	if err != nil {
		return err
	}
	dir.remote = true // the events are in the shared store
	if err := dir.check(c.ownCert); err != nil {
		return err
	}
	if _, err := transport.LoadOrCreateKey(c.data); err != nil {
		return err
	}
	if !c.ownCert {
		if _, err := transport.LoadOrCreateCert(c.data, c.certHosts...); err != nil {
			return err
		}
	}
	if _, err := transport.LoadOrCreateResetKey(c.data); err != nil {
		return err
	}
	mine, missing, err := localIdentity(c.data, c.ownCert)
	if err != nil {
		return err
	}
	if len(missing) > 0 { // created just above: cannot happen
		return fmt.Errorf("serve: %s lacks %s", c.data, strings.Join(missing, ", "))
	}
	mine.Cluster, mine.RecordedBy, mine.RecordedAt = c.cluster, c.advertise, time.Now().UTC().Truncate(time.Second)
	body, err := json.Marshal(mine)
	if err != nil {
		return err
	}
	expected := events.NoStream
	if rec != nil {
		expected = events.Exactly(last)
	}
	actx, cancel := context.WithTimeout(ctx, clusterIdentityTimeout)
	defer cancel()
	_, err = store.AppendToStream(actx, stream, expected, events.EventData{Type: clusterIdentityType, Data: body})
	if errors.Is(err, events.ErrWrongExpectedRevision) {
		// Another node recorded first: compare with what it recorded.
		if rec, _, err = readClusterIdentity(ctx, store, stream); err != nil {
			return err
		}
		if rec == nil {
			return withStatus(exitUnavailable, "serve: --cluster: the record of cluster %q in the store's stream %s vanished while this node wrote its own: start again", c.cluster, stream)
		}
		return c.compare(rec)
	}
	if err != nil {
		return withStatus(exitUnavailable, "serve: --cluster: record the cluster's identity in the store's stream %s: %w", stream, err)
	}
	if rec != nil {
		logger.Warn("replaced the cluster's identity with this node's secrets (--cluster-reset-identity): this node's secrets now define the cluster; "+
			"every other node must now start with a copy of this data directory's token.key, server.crt, server.key and reset.key, "+
			"and the flag should be removed from this node's command line",
			"cluster", c.cluster, "stream", stream, "token_kid", mine.TokenKid, "previous_recorded_by", rec.RecordedBy)
	} else {
		logger.Info("recorded the cluster's identity: the other nodes must start with a copy of this data directory's secrets",
			"cluster", c.cluster, "stream", stream, "token_kid", mine.TokenKid)
	}
	return nil
}

// readClusterIdentity returns the latest record in stream and its
// revision, or nil when there is none.
func readClusterIdentity(ctx context.Context, store events.Store, stream string) (*clusterIdentity, events.Revision, error) {
	rctx, cancel := context.WithTimeout(ctx, clusterIdentityTimeout)
	defer cancel()
	page, err := store.ReadStream(rctx, stream, events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 1})
	if errors.Is(err, events.ErrStreamNotFound) || (err == nil && len(page) == 0) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, withStatus(exitUnavailable, "serve: --cluster: read the cluster's identity from the store's stream %s: %w", stream, err)
	}
	var rec clusterIdentity
	if page[0].Type != clusterIdentityType || json.Unmarshal(page[0].Data, &rec) != nil || rec.TokenKey == "" || rec.ResetKey == "" {
		return nil, 0, fmt.Errorf("serve: --cluster: the store's stream %s holds a %q event at revision %d that is not a cluster identity record; "+
			"the stream belongs to imsync: choose another --cluster name or delete the stream", stream, page[0].Type, page[0].Revision)
	}
	return &rec, page[0].Revision, nil
}

// localIdentity fingerprints the secrets in data without creating any;
// missing names the files that are not there.
func localIdentity(data string, ownCert bool) (id clusterIdentity, missing []string, err error) {
	key, err := transport.LoadKey(data)
	switch {
	case errors.Is(err, transport.ErrNoKey):
		missing = append(missing, "token.key")
	case err != nil:
		return id, nil, err
	default:
		jwk := key.PublicJWK()
		pub, err := base64.RawURLEncoding.DecodeString(jwk.X)
		if err != nil || len(pub) != ed25519.PublicKeySize {
			return id, nil, fmt.Errorf("serve: the public half of %s does not encode: %v", filepath.Join(data, "token.key"), err)
		}
		id.TokenKey, id.TokenKid = fingerprint("token key", pub), key.KID()
	}
	if !ownCert {
		cert, err := transport.LoadCert(data)
		switch {
		case errors.Is(err, transport.ErrNoCert):
			missing = append(missing, transport.CertFile)
		case err != nil:
			return id, nil, err
		default:
			// Plain, as `openssl x509 -fingerprint -sha256` prints it: public.
			sum := sha256.Sum256(cert.Certificate[0])
			id.Certificate = "sha256:" + hex.EncodeToString(sum[:])
		}
	}
	path := filepath.Join(data, transport.ResetKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		missing = append(missing, transport.ResetKeyFile)
	case err != nil:
		return id, nil, fmt.Errorf("serve: %w", err)
	case len(b) != 32:
		return id, nil, fmt.Errorf("serve: %s holds %d bytes, not a 32-byte key", path, len(b))
	default:
		id.ResetKey = fingerprint("reset key", b)
	}
	return id, missing, nil
}

// fingerprint is sha256:HEX of what, under a label of its own so that a
// fingerprint of one secret is never that of another use of the same bytes.
func fingerprint(what string, b []byte) string {
	h := sha256.New()
	io.WriteString(h, "imsync cluster identity: "+what+"\n")
	h.Write(b)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// sameAs says whether c's directory already holds every secret the record
// names, identical, and nothing more is recorded (a --cert node matches
// only a record without a certificate): a reset would write the same.
func (c identityCheck) sameAs(rec *clusterIdentity) bool {
	mine, missing, err := localIdentity(c.data, c.ownCert)
	if err != nil || len(missing) > 0 {
		return false // the reset path creates or refuses as usual
	}
	return mine.TokenKey == rec.TokenKey && mine.Certificate == rec.Certificate && mine.ResetKey == rec.ResetKey
}

// compare refuses c's directory unless its secrets are the record's.
func (c identityCheck) compare(rec *clusterIdentity) error {
	mine, missing, err := localIdentity(c.data, c.ownCert)
	if err != nil {
		return err
	}
	has := func(name string) bool {
		for _, m := range missing {
			if m == name {
				return false
			}
		}
		return true
	}
	var diffs []string
	switch {
	case c.jwks:
		// Tokens come from the app backend's keys; every node is given
		// the same JWKS file, which is not recorded (it may change).
	case !has("token.key"):
		diffs = append(diffs, "token.key is missing (a new key would be generated: the other nodes' tokens would be refused)")
	case mine.TokenKey != rec.TokenKey:
		diffs = append(diffs, fmt.Sprintf("token.key differs (key id %s here, %s in the cluster)", mine.TokenKid, rec.TokenKid))
	}
	switch {
	case c.ownCert:
		// --cert: each node may have a certificate of its own, signed by
		// a CA the clients trust.
	case rec.Certificate == "":
		diffs = append(diffs, "the certificate: the cluster's nodes serve --cert certificates, this one would serve its self-signed server.crt (pass --cert and --key)")
	case !has(transport.CertFile):
		diffs = append(diffs, "server.crt and server.key are missing (a new self-signed certificate would be generated: clients pin the cluster's)")
	case mine.Certificate != rec.Certificate:
		diffs = append(diffs, "server.crt differs (clients pin the cluster's certificate)")
	}
	switch {
	case !has(transport.ResetKeyFile):
		diffs = append(diffs, "reset.key is missing (a new key would be generated: clients moved to this node would not recognise its stateless resets)")
	case mine.ResetKey != rec.ResetKey:
		diffs = append(diffs, "reset.key differs (clients moved to this node would not recognise its stateless resets)")
	}
	if len(diffs) == 0 {
		return nil
	}
	abs, _ := filepath.Abs(c.data)
	return fmt.Errorf("%w: %w: %s is not a copy of cluster %q's data directory (recorded in the store's stream %s by the node at %s on %s): %s. "+
		"Copy token.key, server.crt, server.key and reset.key from an existing node's data directory before this node's first start "+
		"(e.g. `cp -r n1 n4`); to give the whole cluster new secrets, see \"What the nodes share\" in docs/cluster.md (--cluster-reset-identity)",
		errUsage, errClusterIdentity, abs, c.cluster, clusterIdentityStream(c.cluster), rec.RecordedBy, rec.RecordedAt.Format(time.RFC3339), strings.Join(diffs, "; "))
}

// checkClusterIdentityOf runs the check for serve in cluster mode, on a
// connection of its own to the store, before anything else is created and
// before the member joins.
func checkClusterIdentityOf(data, storeURL string, c identityCheck, logger *slog.Logger) error {
	// The check connects to the store before the cluster member starts,
	// which replaces gRPC's global logger with this same discarding one:
	// set it first, so that the client's goroutines never read another.
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, io.Discard))
	store, err := openStore(data, storeURL, logger)
	if err != nil {
		return err
	}
	defer store.Close()
	return checkClusterIdentity(context.Background(), store, c, logger)
}
