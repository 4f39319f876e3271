package transport

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/imsync/imsync/actors"
)

// Device tokens are JWTs (RFC 7519) signed with EdDSA over Ed25519
// (RFC 8037): header {"alg":"EdDSA","kid":...}, claims sub (the user),
// device (the device id), exp (required), iat, and aud/iss when the server
// requires them. The server holds only public keys: those of a JSON Web Key
// Set file (an app backend's signing keys, see JWKS) and the development
// key of its data directory (Key), so any JWT library can mint tokens.
// Every other algorithm (none, HS*, RS*, ES*) and key type is refused.

// jwtAlg is the only signature algorithm accepted.
const jwtAlg = "EdDSA"

// maxTokenSize bounds a token before it is parsed; an EdDSA JWT is a few
// hundred bytes.
const maxTokenSize = 2048

// maxIssuedAhead is how far a token's iat may lie ahead of the server's
// clock (clock skew). Revocations refuse tokens issued up to a second, so a
// token issued further in the future would outlive them.
const maxIssuedAhead = time.Minute

// TokenRules are what a JWT must carry beyond a valid signature and an
// unexpired exp.
type TokenRules struct {
	Audience string // when set, the aud claim must name it
	Issuer   string // when set, the iss claim must equal it
}

// deviceClaims is the JWT's claim set.
type deviceClaims struct {
	Device string `json:"device"`
	jwt.RegisteredClaims
}

// UnmarshalJSON reads the claims after checking that exp, iat and nbf, if
// present, are JSON numbers: RFC 7519 defines a NumericDate as one, while
// golang-jwt (through encoding/json's json.Number) would also read
// "exp":"1767225600" or take "exp":null for no exp at all.
func (dc *deviceClaims) UnmarshalJSON(b []byte) error {
	if err := checkNumericDates(b); err != nil {
		return err
	}
	type plain deviceClaims // without this method
	return json.Unmarshal(b, (*plain)(dc))
}

// checkNumericDates checks the NumericDate claims of a JSON claim set.
func checkNumericDates(claims []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(claims, &raw); err != nil {
		return err
	}
	for _, name := range []string{"exp", "iat", "nbf"} {
		v, ok := raw[name]
		if !ok {
			continue
		}
		if what := jsonKind(v); what != "number" {
			return fmt.Errorf("claim %s is a JSON %s: a NumericDate must be a JSON number of seconds (RFC 7519)", name, what)
		}
		// Past int64 seconds, golang-jwt's conversion depends on the
		// platform (an exp of 1e19 could mean "never expires").
		if f, err := strconv.ParseFloat(string(v), 64); err != nil || !(f >= 0 && f <= maxNumericDate) {
			return fmt.Errorf("claim %s is %s: want seconds from 0 to %d (the year 9999)", name, v, maxNumericDate)
		}
	}
	return nil
}

// maxNumericDate is 9999-12-31T23:59:59Z in unix seconds.
const maxNumericDate = 253402300799

// jsonKind names the kind of a JSON value by its first byte.
func jsonKind(v json.RawMessage) string {
	v = bytes.TrimLeft(v, " \t\r\n")
	if len(v) == 0 {
		return "nothing"
	}
	switch c := v[0]; {
	case c == '"':
		return "string"
	case c == 'n':
		return "null"
	case c == 't' || c == 'f':
		return "boolean"
	case c == '{':
		return "object"
	case c == '[':
		return "array"
	case c == '-' || c >= '0' && c <= '9':
		return "number"
	}
	return "value"
}

// keyLookup finds the public key of a kid, or nil.
type keyLookup func(kid string) ed25519.PublicKey

// verifyJWT checks a JWT's header, signature (with the key its kid names),
// expiry and rules, then its user and device ids.
func verifyJWT(token string, now time.Time, keyOf keyLookup, rules TokenRules) (Claims, error) {
	var c Claims
	if len(token) > maxTokenSize {
		return c, fmt.Errorf("%w: longer than %d bytes", ErrBadToken, maxTokenSize)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwtAlg}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	}
	if rules.Audience != "" {
		opts = append(opts, jwt.WithAudience(rules.Audience))
	}
	if rules.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(rules.Issuer))
	}
	var dc deviceClaims
	_, err := jwt.NewParser(opts...).ParseWithClaims(token, &dc, func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			// No header extension is understood here (RFC 7515, 4.1.11).
			return nil, errors.New("the header has crit: no critical extension is supported")
		}
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errors.New("the header has no kid")
		}
		k := keyOf(kid)
		if k == nil {
			return nil, fmt.Errorf("no key with kid %q", kid)
		}
		return k, nil
	})
	switch {
	case errors.Is(err, jwt.ErrTokenExpired) && dc.ExpiresAt != nil:
		return c, fmt.Errorf("%w: expired at %s", ErrBadToken, dc.ExpiresAt.UTC().Format(time.RFC3339))
	case err != nil:
		return c, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	c = Claims{User: dc.Subject, Device: dc.Device, Expires: dc.ExpiresAt.Unix(), Issuer: dc.Issuer, Audience: dc.Audience}
	if dc.IssuedAt != nil {
		if dc.IssuedAt.After(now.Add(maxIssuedAhead)) {
			return c, fmt.Errorf("%w: claim iat %s is more than %s ahead of the server's clock", ErrBadToken, dc.IssuedAt.UTC().Format(time.RFC3339), maxIssuedAhead)
		}
		c.Issued = dc.IssuedAt.Unix()
	}
	if err := actors.ValidateID("user", c.User); err != nil {
		return c, fmt.Errorf("%w: claim sub: %v", ErrBadToken, err)
	}
	if err := actors.ValidateID("device", c.Device); err != nil {
		return c, fmt.Errorf("%w: claim device: %v", ErrBadToken, err)
	}
	return c, nil
}

// mintJWT signs a device token with priv under kid.
func mintJWT(priv ed25519.PrivateKey, kid, user, device string, ttl time.Duration, now time.Time, rules TokenRules) (string, error) {
	if err := actors.ValidateID("user", user); err != nil {
		return "", err
	}
	if err := actors.ValidateID("device", device); err != nil {
		return "", err
	}
	if ttl <= 0 {
		return "", fmt.Errorf("transport: token lifetime must be positive, not %s", ttl)
	}
	rc := jwt.RegisteredClaims{
		Subject:   user,
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		IssuedAt:  jwt.NewNumericDate(now),
		Issuer:    rules.Issuer,
	}
	if rules.Audience != "" {
		rc.Audience = jwt.ClaimStrings{rules.Audience}
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, deviceClaims{Device: device, RegisteredClaims: rc})
	t.Header["kid"] = kid
	return t.SignedString(priv)
}

// ---- JSON Web Keys ----

// JWK is one public key of a JSON Web Key Set (RFC 7517) as imsync reads
// and writes it: an Ed25519 key (RFC 8037).
type JWK struct {
	Kty string `json:"kty"`           // "OKP"
	Crv string `json:"crv"`           // "Ed25519"
	X   string `json:"x"`             // the public key, base64url
	Kid string `json:"kid"`           // the key id that tokens name in their header
	Alg string `json:"alg,omitempty"` // "EdDSA" when present
	Use string `json:"use,omitempty"` // "sig" when present
	D   string `json:"d,omitempty"`   // a private key: refused
}

// PublicJWK is the JWK of pub; an empty kid becomes the key's RFC 7638
// thumbprint.
func PublicJWK(pub ed25519.PublicKey, kid string) JWK {
	x := base64.RawURLEncoding.EncodeToString(pub)
	if kid == "" {
		kid = thumbprint(x)
	}
	return JWK{Kty: "OKP", Crv: "Ed25519", X: x, Kid: kid, Alg: jwtAlg, Use: "sig"}
}

// thumbprint is the RFC 7638 thumbprint of an Ed25519 JWK with public part x.
func thumbprint(x string) string {
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// MarshalJWKS is the JSON Web Key Set of keys, indented, ending in a newline.
func MarshalJWKS(keys ...JWK) []byte {
	b, _ := json.MarshalIndent(struct {
		Keys []JWK `json:"keys"`
	}{keys}, "", "  ")
	return append(b, '\n')
}

// KeySet is a parsed JSON Web Key Set: Ed25519 public keys by kid.
type KeySet struct{ keys map[string]ed25519.PublicKey }

// ParseJWKS reads a JSON Web Key Set. Every key must be a public Ed25519
// key (kty OKP, crv Ed25519, alg EdDSA if given, use sig if given) with a
// kid of its own; anything else is refused with the key's position, so
// that a mistake never passes unnoticed.
func ParseJWKS(data []byte) (*KeySet, error) {
	var set struct {
		Keys []JWK `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New(`no keys: want {"keys": [{"kty":"OKP","crv":"Ed25519","x":...,"kid":...}]}`)
	}
	ks := &KeySet{keys: map[string]ed25519.PublicKey{}}
	for i, k := range set.Keys {
		where := fmt.Sprintf("key %d (kid %q)", i+1, k.Kid)
		switch {
		case k.Kty != "OKP" || k.Crv != "Ed25519":
			return nil, fmt.Errorf("%s: kty %q crv %q: only Ed25519 keys (kty OKP, crv Ed25519) are accepted", where, k.Kty, k.Crv)
		case k.Alg != "" && k.Alg != jwtAlg:
			return nil, fmt.Errorf("%s: alg %q: only %s is accepted", where, k.Alg, jwtAlg)
		case k.Use != "" && k.Use != "sig":
			return nil, fmt.Errorf("%s: use %q: want sig", where, k.Use)
		case k.D != "":
			return nil, fmt.Errorf("%s: holds a private key (d); the server needs only the public part", where)
		case k.Kid == "":
			return nil, fmt.Errorf("%s: no kid; tokens choose their key by kid", where)
		}
		if _, dup := ks.keys[k.Kid]; dup {
			return nil, fmt.Errorf("%s: the kid appears twice", where)
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%s: x is not a base64url Ed25519 public key of %d bytes", where, ed25519.PublicKeySize)
		}
		ks.keys[k.Kid] = ed25519.PublicKey(x)
	}
	return ks, nil
}

// Kids lists the set's key ids, sorted.
func (ks *KeySet) Kids() []string {
	kids := make([]string, 0, len(ks.keys))
	for kid := range ks.keys {
		kids = append(kids, kid)
	}
	slices.Sort(kids)
	return kids
}

// JWKS is a JSON Web Key Set file that the server verifies tokens with;
// Reload reads it again (on SIGHUP) for key rotation. Safe for concurrent
// use.
type JWKS struct {
	path string
	set  atomic.Pointer[KeySet]
}

// LoadJWKS reads the key set in path.
func LoadJWKS(path string) (*JWKS, error) {
	j := &JWKS{path: path}
	if err := j.Reload(); err != nil {
		return nil, err
	}
	return j, nil
}

// Reload reads the file again; on any error the keys loaded before stay in
// use and the error says why.
func (j *JWKS) Reload() error {
	b, err := os.ReadFile(j.path)
	if err != nil {
		return fmt.Errorf("transport: JWKS: %w", err)
	}
	ks, err := ParseJWKS(b)
	if err != nil {
		return fmt.Errorf("transport: JWKS %s: %w", j.path, err)
	}
	j.set.Store(ks)
	return nil
}

// Path is the file the set is read from.
func (j *JWKS) Path() string { return j.path }

// Kids lists the key ids in use.
func (j *JWKS) Kids() []string { return j.set.Load().Kids() }

// key is the public key of kid, or nil.
func (j *JWKS) key(kid string) ed25519.PublicKey { return j.set.Load().keys[kid] }

// ParseEd25519PEM reads an Ed25519 key in PEM: a private key (PKCS #8,
// "PRIVATE KEY", as `openssl genpkey -algorithm ed25519` writes it) or a
// public key ("PUBLIC KEY"), and returns its public part.
func ParseEd25519PEM(data []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q: want PRIVATE KEY or PUBLIC KEY", block.Type)
	}
	if err != nil {
		return nil, err
	}
	switch k := key.(type) {
	case ed25519.PrivateKey:
		return k.Public().(ed25519.PublicKey), nil
	case ed25519.PublicKey:
		return k, nil
	}
	return nil, fmt.Errorf("a %T, not an Ed25519 key", key)
}

// isV1 says whether token has the format of the HMAC tokens that imsync
// minted before JWTs.
func isV1(token string) bool { return strings.HasPrefix(token, "v1.") }
