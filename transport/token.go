package transport

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imsync/imsync/actors"
)

// Tokens say who a connection is: a user and one of their devices, until
// an expiry. They are JWTs (see jwt.go). The data directory's token.key
// holds the development key that `imsync token` mints with: 32 random
// bytes from which an Ed25519 key is derived (its public key is accepted
// next to the --jwks keys). Before JWTs, the same bytes signed tokens with
// HMAC-SHA256 in the format
//
//	v1.<base64url(JSON claims)>.<base64url(HMAC of "v1."+claims part)>
//
// which is still accepted until such tokens expire, and no longer minted.

// Claims are what a token asserts.
type Claims struct {
	User     string   `json:"u"`
	Device   string   `json:"d"`
	Expires  int64    `json:"exp"` // unix seconds
	Issued   int64    `json:"iat"`
	Issuer   string   `json:"-"` // JWT iss
	Audience []string `json:"-"` // JWT aud
}

// ErrBadToken covers every refused token: malformed, forged, signed with
// another key, or expired.
var ErrBadToken = errors.New("bad token")

// Key is the development token key of a data directory: it mints JWTs
// with an Ed25519 key derived from its secret, and checks them (and the
// v1 tokens of earlier releases).
type Key struct {
	secret []byte
	dev    ed25519.PrivateKey
	kid    string
}

// devSeedLabel separates the Ed25519 seed from the v1 HMAC use of the
// same secret: seed = HMAC-SHA256(secret, label).
const devSeedLabel = "imsync development token key: Ed25519 seed v1"

func newKey(secret []byte) *Key {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(devSeedLabel))
	dev := ed25519.NewKeyFromSeed(m.Sum(nil))
	pub := dev.Public().(ed25519.PublicKey)
	return &Key{secret: secret, dev: dev, kid: "dev-" + thumbprint(base64.RawURLEncoding.EncodeToString(pub))[:16]}
}

const keyFile = "token.key"

// ErrNoKey: the directory holds no token key (LoadKey).
var ErrNoKey = errors.New("transport: no token key")

// LoadKey returns the key kept in dir and never creates one: a missing key
// is ErrNoKey (a new key would make every token already issued fail).
func LoadKey(dir string) (*Key, error) {
	path := filepath.Join(dir, keyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist", ErrNoKey, path)
	}
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	if len(b) < 32 {
		return nil, fmt.Errorf("transport: %s is too short to be a key", path)
	}
	return newKey(b), nil
}

// KeyExists says whether dir holds a token key file.
func KeyExists(dir string) bool {
	_, err := os.Lstat(filepath.Join(dir, keyFile))
	return err == nil
}

// LoadOrCreateKey returns the key kept in dir, creating it (32 random
// bytes, mode 0600) when there is none. Only a server's first start should
// create it: every token issued with an earlier key stops working.
func LoadOrCreateKey(dir string) (*Key, error) {
	k, err := LoadKey(dir)
	if !errors.Is(err, ErrNoKey) {
		return k, err
	}
	path := filepath.Join(dir, keyFile)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	if err := writeNewFile(path, secret, 0o600); errors.Is(err, os.ErrExist) {
		return LoadKey(dir) // created meanwhile by another process
	} else if err != nil {
		return nil, err
	}
	return newKey(secret), nil
}

// NewKey returns a key from secret bytes (tests).
func NewKey(secret []byte) *Key { return newKey(append([]byte(nil), secret...)) }

// Mint signs a JWT for user's device, valid for ttl from now.
func (k *Key) Mint(user, device string, ttl time.Duration, now time.Time) (string, error) {
	return k.MintFor(user, device, ttl, now, TokenRules{})
}

// MintFor is Mint with the aud and iss claims that rules name.
func (k *Key) MintFor(user, device string, ttl time.Duration, now time.Time, rules TokenRules) (string, error) {
	return mintJWT(k.dev, k.kid, user, device, ttl, now, rules)
}

// KID is the key id of the development key (the JWT header's kid).
func (k *Key) KID() string { return k.kid }

// PublicJWK is the development key's public key as a JWK.
func (k *Key) PublicJWK() JWK { return PublicJWK(k.dev.Public().(ed25519.PublicKey), k.kid) }

// public returns the development key's public key if kid is its id.
func (k *Key) public(kid string) ed25519.PublicKey {
	if k == nil || kid != k.kid {
		return nil
	}
	return k.dev.Public().(ed25519.PublicKey)
}

// Verify checks a token of this key: a JWT signed with the development key
// (no aud/iss rules) or a v1 token.
func (k *Key) Verify(token string, now time.Time) (Claims, error) {
	if isV1(token) {
		return k.verifyV1(token, now)
	}
	return verifyJWT(token, now, k.public, TokenRules{})
}

func (k *Key) sign(body string) []byte {
	m := hmac.New(sha256.New, k.secret)
	m.Write([]byte(body))
	return m.Sum(nil)
}

// verifyV1 checks a v1 token's signature, then its claims and expiry.
func (k *Key) verifyV1(token string, now time.Time) (Claims, error) {
	var c Claims
	if len(token) > 1024 {
		return c, fmt.Errorf("%w: too long", ErrBadToken)
	}
	i := strings.LastIndexByte(token, '.')
	if i < 0 || !isV1(token) {
		return c, fmt.Errorf("%w: not a v1 token", ErrBadToken)
	}
	body, sig := token[:i], token[i+1:]
	mac, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(mac, k.sign(body)) {
		return c, fmt.Errorf("%w: signature does not match", ErrBadToken)
	}
	raw, err := base64.RawURLEncoding.DecodeString(body[3:])
	if err != nil {
		return c, fmt.Errorf("%w: unreadable claims", ErrBadToken)
	}
	if err := checkNumericDates(raw); err != nil {
		return c, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	if json.Unmarshal(raw, &c) != nil {
		return c, fmt.Errorf("%w: unreadable claims", ErrBadToken)
	}
	if actors.ValidateID("user", c.User) != nil || actors.ValidateID("device", c.Device) != nil {
		return c, fmt.Errorf("%w: bad user or device", ErrBadToken)
	}
	if now.Unix() >= c.Expires {
		return c, fmt.Errorf("%w: expired at %s", ErrBadToken, time.Unix(c.Expires, 0).UTC().Format(time.RFC3339))
	}
	return c, nil
}
