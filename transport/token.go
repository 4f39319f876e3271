package transport

import (
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
// an expiry, signed with the server's key (HMAC-SHA256). Format:
//
//	v1.<base64url(JSON claims)>.<base64url(HMAC of "v1."+claims part)>

// Claims are what a token asserts.
type Claims struct {
	User    string `json:"u"`
	Device  string `json:"d"`
	Expires int64  `json:"exp"` // unix seconds
	Issued  int64  `json:"iat"`
}

// ErrBadToken covers every refused token: malformed, forged, signed with
// another key, or expired.
var ErrBadToken = errors.New("bad token")

// Key signs and checks tokens.
type Key struct{ secret []byte }

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
	return &Key{secret: b}, nil
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
	return &Key{secret: secret}, nil
}

// NewKey returns a key from secret bytes (tests).
func NewKey(secret []byte) *Key { return &Key{secret: append([]byte(nil), secret...)} }

// Mint signs a token for user's device, valid for ttl from now.
func (k *Key) Mint(user, device string, ttl time.Duration, now time.Time) (string, error) {
	if err := actors.ValidateID("user", user); err != nil {
		return "", err
	}
	if err := actors.ValidateID("device", device); err != nil {
		return "", err
	}
	if ttl <= 0 {
		return "", fmt.Errorf("transport: token lifetime must be positive, not %s", ttl)
	}
	claims, _ := json.Marshal(Claims{User: user, Device: device, Expires: now.Add(ttl).Unix(), Issued: now.Unix()})
	body := "v1." + base64.RawURLEncoding.EncodeToString(claims)
	return body + "." + base64.RawURLEncoding.EncodeToString(k.sign(body)), nil
}

func (k *Key) sign(body string) []byte {
	m := hmac.New(sha256.New, k.secret)
	m.Write([]byte(body))
	return m.Sum(nil)
}

// Verify checks a token's signature, then its claims and expiry.
func (k *Key) Verify(token string, now time.Time) (Claims, error) {
	var c Claims
	if len(token) > 1024 {
		return c, fmt.Errorf("%w: too long", ErrBadToken)
	}
	i := strings.LastIndexByte(token, '.')
	if i < 0 || !strings.HasPrefix(token, "v1.") {
		return c, fmt.Errorf("%w: not a v1 token", ErrBadToken)
	}
	body, sig := token[:i], token[i+1:]
	mac, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(mac, k.sign(body)) {
		return c, fmt.Errorf("%w: signature does not match", ErrBadToken)
	}
	raw, err := base64.RawURLEncoding.DecodeString(body[3:])
	if err != nil || json.Unmarshal(raw, &c) != nil {
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
