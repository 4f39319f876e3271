package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Certificate files kept in the data directory.
const (
	CertFile = "server.crt"
	certKey  = "server.key"
)

// ErrNoCert: the directory holds no certificate (LoadCert).
var ErrNoCert = errors.New("transport: no certificate")

// CertExists says whether dir holds the certificate or its private key.
func CertExists(dir string) bool {
	for _, name := range []string{CertFile, certKey} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

// LoadCert returns the certificate kept in dir and never creates one: with
// neither file it is ErrNoCert; with only one of the two it is an error that
// names the missing one (a new pair would break every pinned client).
func LoadCert(dir string) (tls.Certificate, error) {
	crt, key := filepath.Join(dir, CertFile), filepath.Join(dir, certKey)
	_, crtErr := os.Lstat(crt)
	_, keyErr := os.Lstat(key)
	switch {
	case errors.Is(crtErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
		return tls.Certificate{}, fmt.Errorf("%w: %s and %s do not exist", ErrNoCert, crt, key)
	case errors.Is(crtErr, os.ErrNotExist):
		return tls.Certificate{}, fmt.Errorf("transport: %s is missing while its private key %s exists; restore it from a backup", crt, key)
	case errors.Is(keyErr, os.ErrNotExist):
		return tls.Certificate{}, fmt.Errorf("transport: %s is missing while its certificate %s exists; restore it from a backup", key, crt)
	}
	c, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("transport: certificate in %s: %w", dir, err)
	}
	return c, nil
}

// LoadOrCreateCert returns the server certificate kept in dir, creating a
// self-signed one (ECDSA P-256, ten years, for localhost, the loopback
// addresses and hosts) when neither file exists. Clients pin it:
// `--ca DIR/server.crt`. Half a pair is refused, never replaced.
func LoadOrCreateCert(dir string, hosts ...string) (tls.Certificate, error) {
	crt, key := filepath.Join(dir, CertFile), filepath.Join(dir, certKey)
	if c, err := LoadCert(dir); !errors.Is(err, ErrNoCert) {
		return c, err
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "imsync"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // self-signed: the client pins it as its own CA
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeNewFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeNewFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.LoadX509KeyPair(crt, key)
}

// writeNewFile creates path with data, fsynced; it never overwrites.
func writeNewFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return fmt.Errorf("transport: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path) // a half-written key or certificate is worse than none
		return fmt.Errorf("transport: write %s: %w", path, err)
	}
	return nil
}

// MissingNames lists the hosts (DNS names or IP addresses) that cert is not
// valid for.
func MissingNames(cert tls.Certificate, hosts []string) ([]string, error) {
	if len(cert.Certificate) == 0 {
		return nil, errors.New("transport: empty certificate")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	var missing []string
	for _, h := range hosts {
		if leaf.VerifyHostname(h) != nil {
			missing = append(missing, h)
		}
	}
	return missing, nil
}

// ReplaceCert moves the self-signed certificate of dir aside (to
// server.crt.old and server.key.old, replacing earlier ones) and creates a
// new one for localhost, the loopback addresses and hosts. Clients that
// pinned the old certificate must pin the new one.
func ReplaceCert(dir string, hosts ...string) (tls.Certificate, error) {
	for _, name := range []string{CertFile, certKey} {
		path := filepath.Join(dir, name)
		if err := os.Rename(path, path+".old"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return tls.Certificate{}, fmt.Errorf("transport: %w", err)
		}
	}
	return LoadOrCreateCert(dir, hosts...)
}

// CertFiles is a certificate and its key read from PEM files, served
// through tls.Config.GetCertificate so that Reload replaces it for new
// connections while open ones go on. Safe for concurrent use.
type CertFiles struct {
	crt, key string
	cur      atomic.Pointer[tls.Certificate]
}

// LoadCertFiles reads the certificate crt and its private key key.
func LoadCertFiles(crt, key string) (*CertFiles, error) {
	c := &CertFiles{crt: crt, key: key}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again; on any error the certificate loaded before
// stays in use and the error says why.
func (c *CertFiles) Reload() error {
	cert, err := tls.LoadX509KeyPair(c.crt, c.key)
	if err != nil {
		return fmt.Errorf("transport: certificate %s, key %s: %w", c.crt, c.key, err)
	}
	c.cur.Store(&cert)
	return nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (c *CertFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// TLSConfig serves the current certificate.
func (c *CertFiles) TLSConfig() *tls.Config { return &tls.Config{GetCertificate: c.GetCertificate} }
