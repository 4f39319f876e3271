package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/wire"
)

// OpenAPI is the OpenAPI 3 document of the API (docs/openapi.json holds
// the same bytes), served at /openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// MinKeyLen is the shortest API key accepted.
const MinKeyLen = 16

// Config configures the API. Service and Key are required.
type Config struct {
	Service *actors.Service
	// Gateway closes connections for disconnect and revoke; without it
	// those endpoints answer 503 with code 7.
	Gateway *transport.Server
	// Key is the API key callers present as "Authorization: Bearer KEY".
	Key    []byte
	Logger *slog.Logger
}

// API serves the HTTP JSON API for the app backend.
type API struct {
	cfg     Config
	keyHash [sha256.Size]byte
	mux     *http.ServeMux
}

// requestTimeout bounds one call on the service.
const requestTimeout = 15 * time.Second

// maxRequestBytes bounds a request body (a message body is at most 16 KiB,
// a group creation lists up to 100,000 members).
const maxRequestBytes = 4 << 20

// New checks cfg and returns the API.
func New(cfg Config) (*API, error) {
	if cfg.Service == nil {
		return nil, errors.New("api: Config.Service is required")
	}
	if len(cfg.Key) < MinKeyLen {
		return nil, fmt.Errorf("api: the API key must be at least %d bytes; the API never runs without one", MinKeyLen)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &API{cfg: cfg, keyHash: sha256.Sum256(cfg.Key), mux: http.NewServeMux()}
	for _, r := range a.routes() {
		a.mux.Handle(r.method+" "+r.path, a.authed(r.handle))
	}
	a.mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(OpenAPI)
	})
	return a, nil
}

// LoadKey reads an API key file: its content, surrounding white space
// removed, at least MinKeyLen bytes.
func LoadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("api key: %w", err)
	}
	k := []byte(strings.TrimSpace(string(b)))
	if len(k) < MinKeyLen {
		return nil, fmt.Errorf("api key: %s holds %d bytes; at least %d are needed", path, len(k), MinKeyLen)
	}
	return k, nil
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Unknown paths and methods answer in the API's error format.
	if _, pattern := a.mux.Handler(r); pattern == "" {
		if allow := a.allowed(r); len(allow) > 0 {
			methodNotAllowed(w, r, allow)
			return
		}
		writeError(w, &wire.Error{Code: wire.CodeUnknown, Message: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
		return
	}
	a.mux.ServeHTTP(w, r)
}

// authed checks the API key (comparing hashes in constant time, so that
// neither the key's bytes nor its length leak) before h runs.
func (a *API) authed(h func(ctx context.Context, r *http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		ok := strings.EqualFold(scheme, "Bearer") // schemes are case-insensitive
		got := sha256.Sum256([]byte(tok))
		if !ok || subtle.ConstantTimeCompare(got[:], a.keyHash[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="imsync"`)
			writeError(w, &wire.Error{Code: wire.CodeUnauthorized, Message: "missing or wrong API key"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxRequestBytes)
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		defer cancel()
		out, err := h(ctx, r)
		if err != nil {
			writeError(w, toError(err))
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// Error is the body of every error answer: a wire protocol code
// (docs/protocol.md) and a message.
type Error struct {
	Code  uint32 `json:"code"`
	Error string `json:"error"`
	// Reason: of a REJECTED answer, the check's reason code; of a
	// CHECK_FAILED one, the name of the check that failed.
	Reason string `json:"reason,omitempty"`
}

func writeError(w http.ResponseWriter, e *wire.Error) {
	writeJSON(w, httpStatus(e.Code), Error{Code: e.Code, Error: e.Message, Reason: e.Reason})
}

// httpStatus maps a wire code to the HTTP status of its answer.
func httpStatus(code uint32) int {
	switch code {
	case uint32(actors.Code_INVALID):
		return http.StatusBadRequest
	case uint32(actors.Code_NOT_FOUND):
		return http.StatusNotFound
	case uint32(actors.Code_FORBIDDEN):
		return http.StatusForbidden
	case uint32(actors.Code_CONFLICT):
		return http.StatusConflict
	case uint32(actors.Code_TOO_LARGE):
		return http.StatusRequestEntityTooLarge
	case uint32(actors.Code_EXPIRED):
		return http.StatusGone
	case uint32(actors.Code_UNAVAILABLE), uint32(actors.Code_CHECK_FAILED):
		return http.StatusServiceUnavailable
	case uint32(actors.Code_REJECTED):
		return http.StatusUnprocessableEntity
	case wire.CodeUnknown:
		return http.StatusNotFound
	case wire.CodeUnauthorized:
		return http.StatusUnauthorized
	case wire.CodeRateLimited:
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// toError maps service failures to their codes, as the QUIC gateway does.
func toError(err error) *wire.Error {
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	var f *actors.Failure
	if errors.As(err, &f) {
		return &wire.Error{Code: uint32(f.Code), Message: f.Message, Reason: f.Reason}
	}
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return &wire.Error{Code: uint32(actors.Code_TOO_LARGE), Message: fmt.Sprintf("request body exceeds %d bytes", mb.Limit)}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &wire.Error{Code: uint32(actors.Code_UNAVAILABLE), Message: err.Error()}
	}
	return &wire.Error{Code: wire.CodeInternal, Message: err.Error()}
}

func invalid(format string, args ...any) error {
	return &actors.Failure{Code: actors.Code_INVALID, Message: fmt.Sprintf(format, args...)}
}
