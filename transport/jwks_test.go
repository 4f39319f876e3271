package transport

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseJWKSRefusals(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	x := base64.RawURLEncoding.EncodeToString(pub)
	ok := `{"kty":"OKP","crv":"Ed25519","x":"` + x + `","kid":"a"}`
	if ks, err := ParseJWKS([]byte(`{"keys":[` + ok + `]}`)); err != nil || len(ks.Kids()) != 1 {
		t.Fatalf("a good set: %v", err)
	}
	for name, tc := range map[string]struct{ set, why string }{
		"not JSON":    {`{`, "not a JSON Web Key Set"},
		"no keys":     {`{"keys":[]}`, "no keys"},
		"RSA":         {`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"r"}]}`, "only Ed25519"},
		"X25519":      {`{"keys":[{"kty":"OKP","crv":"X25519","x":"` + x + `","kid":"a"}]}`, "only Ed25519"},
		"HS256 alg":   {`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + x + `","kid":"a","alg":"HS256"}]}`, "alg"},
		"private key": {`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + x + `","d":"` + x + `","kid":"a"}]}`, "private key"},
		"no kid":      {`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + x + `"}]}`, "no kid"},
		"short x":     {`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA","kid":"a"}]}`, "32 bytes"},
		"dup kid":     {`{"keys":[` + ok + `,` + ok + `]}`, "twice"},
		"enc use":     {`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + x + `","kid":"a","use":"enc"}]}`, "use"},
	} {
		if _, err := ParseJWKS([]byte(tc.set)); err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%s: %v, want an error mentioning %q", name, err, tc.why)
		}
	}
}

// A bad file on reload keeps the keys loaded before.
func TestJWKSReloadKeepsOldOnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jwks.json")
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	os.WriteFile(path, MarshalJWKS(PublicJWK(pub, "one")), 0o644)
	j, err := LoadJWKS(path)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte(`{"keys":[{"kty":"RSA"}]}`), 0o644)
	if err := j.Reload(); err == nil {
		t.Fatal("reloaded a bad file")
	}
	if j.key("one") == nil || strings.Join(j.Kids(), ",") != "one" {
		t.Fatalf("keys after a failed reload: %v", j.Kids())
	}
	pub2, _, _ := ed25519.GenerateKey(rand.Reader)
	os.WriteFile(path, MarshalJWKS(PublicJWK(pub2, "two")), 0o644)
	if err := j.Reload(); err != nil {
		t.Fatal(err)
	}
	if j.key("one") != nil || j.key("two") == nil {
		t.Fatalf("keys after reload: %v", j.Kids())
	}
}

func TestParseEd25519PEMAndThumbprint(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	got, err := ParseEd25519PEM(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil || !got.Equal(pub) {
		t.Fatalf("private PEM: %v", err)
	}
	der, _ = x509.MarshalPKIXPublicKey(pub)
	if got, err = ParseEd25519PEM(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})); err != nil || !got.Equal(pub) {
		t.Fatalf("public PEM: %v", err)
	}
	// RFC 8037 appendix A.3: the thumbprint of its example key.
	if tp := thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"); tp != "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k" {
		t.Fatalf("thumbprint %s", tp)
	}
}
