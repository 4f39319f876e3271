package transport_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/wire"
)

// backend is an app backend's token issuer: Ed25519 keys by kid, published
// as a JWKS file the server reads.
type backend struct {
	keys map[string]ed25519.PrivateKey
	jwks string // file path
}

func newBackend(t *testing.T, kids ...string) *backend {
	t.Helper()
	b := &backend{keys: map[string]ed25519.PrivateKey{}, jwks: filepath.Join(t.TempDir(), "jwks.json")}
	for _, kid := range kids {
		b.addKey(kid)
	}
	b.publish(t, kids...)
	return b
}

func (b *backend) addKey(kid string) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	b.keys[kid] = priv
}

// publish writes the JWKS with the public keys of kids.
func (b *backend) publish(t *testing.T, kids ...string) {
	t.Helper()
	var jwks []transport.JWK
	for _, kid := range kids {
		jwks = append(jwks, transport.PublicJWK(b.keys[kid].Public().(ed25519.PublicKey), kid))
	}
	if err := os.WriteFile(b.jwks, transport.MarshalJWKS(jwks...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// mint signs claims with the key of kid, as any JWT library would.
func (b *backend) mint(t *testing.T, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(b.keys[kid])
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func deviceClaims(user, device string, ttl time.Duration) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"sub": user, "device": device, "iat": now.Unix(), "exp": now.Add(ttl).Unix(), "aud": "chat", "iss": "https://app.example"}
}

// startJWTServer starts a server that verifies tokens with b's JWKS and
// requires aud "chat" and iss "https://app.example".
func startJWTServer(t *testing.T, b *backend, cfg transport.Config) *testServer {
	t.Helper()
	jwks, err := transport.LoadJWKS(b.jwks)
	if err != nil {
		t.Fatal(err)
	}
	cfg.JWKS = jwks
	cfg.TokenRules = transport.TokenRules{Audience: "chat", Issuer: "https://app.example"}
	return startServer(t, cfg)
}

func dialToken(t *testing.T, ts *testServer, tok string) (*client.Client, error) {
	t.Helper()
	c, err := client.Dial(ctx(t), client.Config{Addr: ts.addr, Token: tok, TLS: ts.tls, NoReconnect: true})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// A JWT minted by the app backend with a JWT library and its Ed25519 key
// logs in; every malformed, forged, expired or misdirected one is refused
// with code 102 and an error matching client.ErrBadToken.
func TestBackendJWTLogin(t *testing.T) {
	b := newBackend(t, "k1")
	ts := startJWTServer(t, b, transport.Config{})

	c, err := dialToken(t, ts, b.mint(t, "k1", deviceClaims("ann", "phone", time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Welcome(); w.User != "ann" || w.Device != "phone" || w.TokenExpires < time.Now().Add(59*time.Minute).Unix() {
		t.Fatalf("welcome: %v", w)
	}
	if _, err := c.Send(ctx(t), client.Message{To: "bob", ClientMsgID: "1", Text: "hi"}); err != nil {
		t.Fatal(err)
	}

	b.addKey("unpublished")
	_, rsaKey := func() (any, *rsa.PrivateKey) { k, _ := rsa.GenerateKey(rand.Reader, 2048); return nil, k }()
	sign := func(method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
		tok := jwt.NewWithClaims(method, claims)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	without := func(name string) jwt.MapClaims {
		c := deviceClaims("ann", "phone", time.Hour)
		delete(c, name)
		return c
	}
	with := func(name string, v any) jwt.MapClaims {
		c := deviceClaims("ann", "phone", time.Hour)
		c[name] = v
		return c
	}
	good := b.mint(t, "k1", deviceClaims("ann", "phone", time.Hour))
	pub := b.keys["k1"].Public().(ed25519.PublicKey)
	for name, tc := range map[string]struct{ tok, why string }{
		"expired":                     {b.mint(t, "k1", deviceClaims("ann", "phone", -time.Minute)), "expired at"},
		"unknown kid":                 {b.mint(t, "unpublished", deviceClaims("ann", "phone", time.Hour)), `no key with kid "unpublished"`},
		"wrong key":                   {sign(jwt.SigningMethodEdDSA, b.keys["unpublished"], "k1", deviceClaims("ann", "phone", time.Hour)), "signature"},
		"no kid":                      {sign(jwt.SigningMethodEdDSA, b.keys["k1"], "", deviceClaims("ann", "phone", time.Hour)), "no kid"},
		"alg none":                    {sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "k1", deviceClaims("ann", "phone", time.Hour)), "signing method none is invalid"},
		"HS256, public key as secret": {sign(jwt.SigningMethodHS256, []byte(pub), "k1", deviceClaims("ann", "phone", time.Hour)), "signing method HS256 is invalid"},
		"RS256":                       {sign(jwt.SigningMethodRS256, rsaKey, "k1", deviceClaims("ann", "phone", time.Hour)), "signing method RS256 is invalid"},
		"no exp":                      {b.mint(t, "k1", without("exp")), "exp"},
		"wrong aud":                   {b.mint(t, "k1", with("aud", "other-app")), "audience"},
		"no aud":                      {b.mint(t, "k1", without("aud")), "aud"},
		"wrong iss":                   {b.mint(t, "k1", with("iss", "https://evil.example")), "issuer"},
		"no device":                   {b.mint(t, "k1", without("device")), "device"},
		"bad user":                    {b.mint(t, "k1", with("sub", "a/b")), "sub"},
		"not yet valid":               {b.mint(t, "k1", with("nbf", time.Now().Add(time.Hour).Unix())), "not valid yet"},
		"tampered payload":            {strings.Split(good, ".")[0] + "." + strings.Split(b.mint(t, "k1", deviceClaims("bob", "phone", time.Hour)), ".")[1] + "." + strings.Split(good, ".")[2], "signature"},
	} {
		_, err := dialToken(t, ts, tc.tok)
		if !errors.Is(err, client.ErrBadToken) || client.CodeOf(err) != wire.CodeUnauthorized || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%s: %v, want code 102 mentioning %q", name, err, tc.why)
		}
	}
}

// The development key's tokens are accepted next to the JWKS (with the
// same aud/iss rules).
func TestDevKeyAcceptedWithJWKS(t *testing.T) {
	b := newBackend(t, "k1")
	ts := startJWTServer(t, b, transport.Config{})
	rules := transport.TokenRules{Audience: "chat", Issuer: "https://app.example"}
	tok, err := ts.key.MintFor("ann", "laptop", time.Hour, time.Now(), rules)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dialToken(t, ts, tok); err != nil {
		t.Fatal(err)
	}
	noAud, _ := ts.key.Mint("ann", "laptop", time.Hour, time.Now())
	if _, err := dialToken(t, ts, noAud); !errors.Is(err, client.ErrBadToken) {
		t.Fatalf("a dev token without the required aud: %v", err)
	}
}

// An open connection is closed when its backend token expires (code 102,
// "token expired"), and the client reports a bad token.
func TestBackendTokenExpiryClosesConnection(t *testing.T) {
	b := newBackend(t, "k1")
	ts := startJWTServer(t, b, transport.Config{})
	c, err := client.Dial(ctx(t), client.Config{Addr: ts.addr, Token: b.mint(t, "k1", deviceClaims("ann", "phone", 2*time.Second)), TLS: ts.tls})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, 10*time.Second, "the client to stop at the token's expiry", func() bool { return c.Err() != nil })
	var we *wire.Error
	if err := c.Err(); !errors.Is(err, client.ErrBadToken) || !errors.As(err, &we) || we.Message != "token expired" {
		t.Fatalf("Err: %v, want bad token \"token expired\"", err)
	}
	waitEntriesClosed(t, c)
}

// A client with a TokenSource re-authenticates on its open connection
// before each token expires: it stays on the same connection across
// several expiries of 2 s tokens.
func TestTokenSourceKeepsConnection(t *testing.T) {
	b := newBackend(t, "k1")
	ts := startJWTServer(t, b, transport.Config{})
	var minted atomic.Int32
	src := func(context.Context) (string, error) {
		minted.Add(1)
		return b.mint(t, "k1", deviceClaims("ann", "phone", 2*time.Second)), nil
	}
	c, err := client.Dial(ctx(t), client.Config{Addr: ts.addr, TokenSource: src, TLS: ts.tls})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first := c.Welcome()
	start := time.Now()
	waitFor(t, 20*time.Second, "three refreshes, past several expiries", func() bool {
		return minted.Load() >= 4 && time.Since(start) > 4*time.Second
	})
	if c.Welcome() != first {
		t.Fatal("the client logged in again instead of re-authenticating")
	}
	if err := c.Err(); err != nil {
		t.Fatalf("Err: %v", err)
	}
	if _, err := c.Send(ctx(t), client.Message{To: "bob", ClientMsgID: "after", Text: "still here"}); err != nil {
		t.Fatal(err)
	}
}

// A TokenSource whose tokens the server refuses ends the client with a bad
// token error instead of reconnecting for ever: at Dial, and after the
// connection's token expired.
func TestTokenSourceRefusedReportsBadToken(t *testing.T) {
	b := newBackend(t, "k1")
	ts := startJWTServer(t, b, transport.Config{})
	b.addKey("revoked")
	if _, err := client.Dial(ctx(t), client.Config{Addr: ts.addr, TLS: ts.tls, TokenSource: func(context.Context) (string, error) {
		return b.mint(t, "revoked", deviceClaims("ann", "phone", time.Hour)), nil
	}}); !errors.Is(err, client.ErrBadToken) {
		t.Fatalf("Dial: %v, want ErrBadToken", err)
	}

	var calls atomic.Int32
	c, err := client.Dial(ctx(t), client.Config{Addr: ts.addr, TLS: ts.tls, TokenSource: func(context.Context) (string, error) {
		if calls.Add(1) == 1 {
			return b.mint(t, "k1", deviceClaims("ann", "phone", 2*time.Second)), nil
		}
		return b.mint(t, "revoked", deviceClaims("ann", "phone", time.Hour)), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitEntriesClosed(t, c)
	if err := c.Err(); !errors.Is(err, client.ErrBadToken) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("Err: %v, want ErrBadToken about kid revoked", err)
	}
}

// Re-authentication must keep the user and device: a token of another
// device is refused on the open connection.
func TestReauthOtherDeviceRefused(t *testing.T) {
	b := newBackend(t, "k1")
	ts := startJWTServer(t, b, transport.Config{})
	tc := ts.tls.Clone()
	tc.NextProtos = []string{transport.ALPN}
	qc, err := quic.DialAddr(ctx(t), ts.addr, tc, &quic.Config{MaxIdleTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	control, err := qc.OpenStreamSync(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	wire.WriteFrame(control, &wire.Hello{Token: b.mint(t, "k1", deviceClaims("ann", "phone", time.Minute))})
	rd := wire.NewReader(control, 0)
	var p wire.ServerPush
	if err := rd.Read(&p); err != nil || p.GetWelcome() == nil {
		t.Fatalf("login: %v %v", &p, err)
	}
	expires := p.GetWelcome().TokenExpires
	reauth := func(tok string) *wire.ReauthResult {
		t.Helper()
		wire.WriteFrame(control, &wire.ClientControl{Control: &wire.ClientControl_Reauth{Reauth: &wire.Reauth{Token: tok}}})
		for {
			var p wire.ServerPush
			if err := rd.Read(&p); err != nil {
				t.Fatal(err)
			}
			if r := p.GetReauth(); r != nil {
				return r
			}
		}
	}
	if r := reauth(b.mint(t, "k1", deviceClaims("ann", "tablet", time.Hour))); r.GetError().GetCode() != wire.CodeUnauthorized || !strings.Contains(r.GetError().GetMessage(), "tablet") {
		t.Fatalf("reauth as another device: %v", r)
	}
	if r := reauth(b.mint(t, "k1", deviceClaims("ann", "phone", time.Hour))); r.GetError() != nil || r.TokenExpires <= expires {
		t.Fatalf("reauth with a later token: %v (old expiry %d)", r, expires)
	}
}

// A token in the v1 format that earlier releases minted with the data
// directory's key still logs in (until it expires); one of another key
// does not.
func TestV1TokenStillLogsIn(t *testing.T) {
	ts := startServer(t, transport.Config{})
	old := transport.MintV1(ts.key, "ann", "phone", time.Hour, time.Now())
	c, err := dialToken(t, ts, old)
	if err != nil {
		t.Fatalf("a v1 token of the data directory's key: %v", err)
	}
	if w := c.Welcome(); w.User != "ann" || w.Device != "phone" {
		t.Fatalf("welcome: %v", w)
	}
	other, err := transport.LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dialToken(t, ts, transport.MintV1(other, "ann", "phone", time.Hour, time.Now())); !errors.Is(err, client.ErrBadToken) {
		t.Fatalf("a v1 token of another key: %v", err)
	}
}

// A server with a JWKS and no development key accepts the JWKS's tokens
// only.
func TestJWKSOnlyServer(t *testing.T) {
	b := newBackend(t, "k1")
	ts := startJWTServer(t, b, transport.Config{})
	rules := ts.restart(t, func(cfg *transport.Config) { cfg.Key = nil }).Config().TokenRules
	if _, err := dialToken(t, ts, b.mint(t, "k1", deviceClaims("ann", "phone", time.Hour))); err != nil {
		t.Fatalf("a JWKS token: %v", err)
	}
	dev, _ := ts.key.MintFor("ann", "phone", time.Hour, time.Now(), rules)
	for name, tok := range map[string]string{"dev JWT": dev, "v1": transport.MintV1(ts.key, "ann", "phone", time.Hour, time.Now())} {
		if _, err := dialToken(t, ts, tok); !errors.Is(err, client.ErrBadToken) {
			t.Errorf("%s without a development key: %v", name, err)
		}
	}
}
