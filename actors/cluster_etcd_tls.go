package actors

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Why EtcdMembersConfig could not connect to etcd (errors.Is), besides
// etcd's own refusals (rpctypes.ErrAuthFailed, ...).
var (
	ErrEtcdServesTLS       = errors.New("etcd serves TLS there, and this client connects in plaintext")
	ErrEtcdServesPlaintext = errors.New("etcd does not speak TLS there (it serves plaintext), and this client connects with TLS")
	ErrEtcdUntrusted       = errors.New("etcd's certificate is not trusted (verified against the given CA, or the system's roots without one)")
	ErrEtcdRefusedCert     = errors.New("etcd refused this client's certificate, or the lack of one")
)

// etcdCauses is the error of a connection that failed at one or more
// endpoints, each with its cause.
type etcdCauses struct {
	msg    string
	causes []error
}

func (e *etcdCauses) Error() string   { return e.msg }
func (e *etcdCauses) Unwrap() []error { return e.causes }

// etcdProbeTimeout bounds each endpoint's probe for the cause of a
// failed first call (see etcdRefused).
const etcdProbeTimeout = 2 * time.Second

// etcdRefused is the error of EtcdMembersConfig's first calls to etcd.
// etcd's own refusals (a wrong password, auth required, no permission)
// come back named, wrapping etcd's error (rpctypes.ErrAuthFailed, ...).
// A connection that failed shows only as the client's deadline passing:
// the etcd client retries it and keeps the cause to itself. The endpoints
// are then probed for it: TLS on one side only, a certificate one side
// does not trust, nothing listening.
func etcdRefused(cfg EtcdConfig, err error) error {
	endpoints := strings.Join(cfg.Endpoints, ",")
	err = rpctypes.Error(err)
	var refused rpctypes.EtcdError
	if errors.As(err, &refused) {
		switch {
		case errors.Is(err, rpctypes.ErrAuthFailed):
			return fmt.Errorf("etcd %s: user %q: %w", endpoints, cfg.Username, err)
		case errors.Is(err, rpctypes.ErrUserEmpty), errors.Is(err, rpctypes.ErrInvalidAuthToken):
			return fmt.Errorf("etcd %s requires a user and password (its authentication is enabled): %w", endpoints, err)
		case errors.Is(err, rpctypes.ErrPermissionDenied) && cfg.Username == "":
			return fmt.Errorf("etcd %s denied access (its authentication is enabled): it needs a user and password, "+
				"or a client certificate whose common name is a user that may read and write %s/: %w", endpoints, EtcdKeyPrefix, err)
		case errors.Is(err, rpctypes.ErrPermissionDenied):
			return fmt.Errorf("etcd %s: user %q may not read and write %s/: %w", endpoints, cfg.Username, EtcdKeyPrefix, err)
		}
		return fmt.Errorf("etcd %s refused: %w", endpoints, err)
	}
	var causes, unanswered []error
	var refusedAt, unansweredAt []string
	for _, ep := range cfg.Endpoints {
		connected, cause := probeEtcd(ep, cfg.TLS)
		switch {
		case !connected:
			unanswered = append(unanswered, cause)
			unansweredAt = append(unansweredAt, ep+": "+cause.Error())
		case cause != nil:
			causes = append(causes, cause)
			refusedAt = append(refusedAt, ep+": "+cause.Error())
		}
	}
	switch {
	case len(causes) > 0:
		return &etcdCauses{msg: fmt.Sprintf("etcd %s cannot be reached: %s", endpoints, strings.Join(refusedAt, "; ")), causes: causes}
	case len(unanswered) == len(cfg.Endpoints):
		return &etcdCauses{msg: fmt.Sprintf("etcd %s did not answer within %v: %s", endpoints, etcdDialTimeout, strings.Join(unansweredAt, "; ")), causes: unanswered}
	}
	return fmt.Errorf("etcd %s did not answer within %v: %w", endpoints, etcdDialTimeout, err)
}

// http2Preface opens an HTTP/2 connection (etcd's gRPC): the client's
// preface and an empty SETTINGS frame, which etcd answers.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"

// probeEtcd connects to one etcd endpoint as the client does (over TLS
// with conf, or in plaintext when conf is nil) and says why etcd cannot
// be reached there, or nil when it finds nothing wrong. connected is false
// when no TCP connection was made (cause says why).
func probeEtcd(endpoint string, conf *tls.Config) (connected bool, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), etcdProbeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", endpoint)
	if err != nil {
		return false, err
	}
	return true, probeTLS(ctx, conn, endpoint, conf)
}

// probeTLS is probeEtcd's check of the connection conn to endpoint.
func probeTLS(ctx context.Context, conn net.Conn, endpoint string, conf *tls.Config) error {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(etcdProbeTimeout))
	if conf == nil {
		// Only whether etcd speaks TLS, nothing sent after the
		// handshake: its certificate is not checked.
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err := tc.HandshakeContext(ctx); err == nil || isRemoteAlert(err) {
			return ErrEtcdServesTLS
		}
		return nil
	}
	c := conf.Clone()
	if c.ServerName == "" {
		c.ServerName, _, _ = net.SplitHostPort(endpoint)
	}
	c.NextProtos = []string{"h2"}
	tc := tls.Client(conn, c)
	if err := tc.HandshakeContext(ctx); err != nil {
		var header tls.RecordHeaderError
		var verify *tls.CertificateVerificationError
		var unknown x509.UnknownAuthorityError
		var host x509.HostnameError
		var invalid x509.CertificateInvalidError
		switch {
		case errors.As(err, &header), errors.Is(err, io.EOF) && speaksPlaintext(endpoint):
			return ErrEtcdServesPlaintext
		case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &host), errors.As(err, &invalid):
			return fmt.Errorf("%w: %v", ErrEtcdUntrusted, err)
		case isRemoteAlert(err):
			return fmt.Errorf("%w: %v", ErrEtcdRefusedCert, err)
		}
		return fmt.Errorf("TLS handshake: %w", err)
	}
	// With TLS 1.3 etcd checks the client's certificate after the
	// client's side of the handshake ended: its verdict comes with its
	// first answer.
	if _, err := tc.Write([]byte(http2Preface)); err != nil {
		return fmt.Errorf("after the TLS handshake: %w", err)
	}
	if _, err := tc.Read(make([]byte, 1)); err != nil && isRemoteAlert(err) {
		return fmt.Errorf("%w: %v", ErrEtcdRefusedCert, err)
	}
	return nil
}

// speaksPlaintext reports whether etcd at endpoint answers an HTTP/2
// connection in plaintext: its first frame is its SETTINGS.
func speaksPlaintext(endpoint string) bool {
	conn, err := net.DialTimeout("tcp", endpoint, etcdProbeTimeout)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(etcdProbeTimeout))
	if _, err := conn.Write([]byte(http2Preface)); err != nil {
		return false
	}
	var header [9]byte // length (3 bytes), type, flags, stream id
	if _, err := io.ReadFull(conn, header[:]); err != nil {
		return false
	}
	return header[3] == 0x4
}

// isRemoteAlert reports whether err is a TLS alert the other side sent
// (a certificate required, bad or from an unknown authority).
func isRemoteAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}
