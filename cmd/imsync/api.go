package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/transport/api"
	"github.com/imsync/imsync/transport/wire"
)

// runAPI is `imsync api METHOD PATH [JSON|-]`: one call of the server API
// (serve --api), its JSON answer printed as received.
func runAPI(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("api")
	addr := fs.String("api", "", "the server API's `HOST:PORT` (serve's --api) or its http(s):// URL")
	keyFile := fs.String("api-key", "", "`FILE` holding the API key (serve's --api-key)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up on the call after this long")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	call, err := newAPICall(fs.Args(), *addr, *timeout, func() (io.Reader, error) {
		b, err := io.ReadAll(stdinOf(ctx))
		return bytes.NewReader(b), err
	})
	if err != nil {
		return err
	}
	if *keyFile != "" {
		if call.key, err = api.LoadKey(*keyFile); err != nil {
			return withStatus(exitNotFound, "api: --api-key: %w", err)
		}
	} else if call.path != "/openapi.json" {
		return fmt.Errorf("%w: api: --api-key FILE (or IMSYNC_API_KEY) is required", errUsage)
	}
	return call.do(ctx, out)
}

// apiCall is one checked call of the server API.
type apiCall struct {
	method, url, path string
	body              []byte // nil: no body
	key               []byte
	timeout           time.Duration
}

var apiMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// newAPICall checks the arguments: nothing is sent unless they are all
// right (a body must be one JSON value).
func newAPICall(args []string, addr string, timeout time.Duration, stdin func() (io.Reader, error)) (*apiCall, error) {
	if len(args) < 2 || len(args) > 3 {
		return nil, fmt.Errorf("%w: api takes METHOD PATH [JSON|-], e.g. imsync api GET /v1/users/ann/conversations", errUsage)
	}
	if addr == "" {
		return nil, fmt.Errorf("%w: api needs --api HOST:PORT (or IMSYNC_API): the address serve --api listens on", errUsage)
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("%w: api: --timeout must be positive", errUsage)
	}
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return nil, fmt.Errorf("%w: api: --api %q: want HOST:PORT or an http(s):// URL", errUsage, addr)
	}
	c := &apiCall{method: strings.ToUpper(args[0]), path: args[1], timeout: timeout}
	known := false
	for _, m := range apiMethods {
		known = known || m == c.method
	}
	if !known {
		return nil, fmt.Errorf("%w: api: method %q: want one of %s", errUsage, args[0], strings.Join(apiMethods, ", "))
	}
	if !strings.HasPrefix(c.path, "/") {
		return nil, fmt.Errorf("%w: api: path %q: want one starting with /, such as /v1/messages", errUsage, c.path)
	}
	c.path, _, _ = strings.Cut(c.path, "?")
	c.url = strings.TrimSuffix(u.String(), "/") + args[1]
	if _, err := url.ParseRequestURI(c.url); err != nil {
		return nil, fmt.Errorf("%w: api: %q: %v", errUsage, args[1], err)
	}
	if len(args) == 3 {
		if c.method == http.MethodGet || c.method == http.MethodDelete {
			return nil, fmt.Errorf("%w: api: %s takes no body; parameters go in the path's query (?reader=ann)", errUsage, c.method)
		}
		var r io.Reader = strings.NewReader(args[2])
		if args[2] == "-" {
			if r, err = stdin(); err != nil {
				return nil, fmt.Errorf("api: standard input: %w", err)
			}
		}
		if c.body, err = io.ReadAll(r); err != nil {
			return nil, fmt.Errorf("api: standard input: %w", err)
		}
		if !json.Valid(c.body) {
			return nil, fmt.Errorf("%w: api: the body is not valid JSON: %s", errUsage, jsonProblem(c.body))
		}
	}
	return c, nil
}

// jsonProblem says what is wrong with b, which is not valid JSON.
func jsonProblem(b []byte) string {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err.Error()
	}
	return "trailing data"
}

// do sends the call and prints the answer; an error answer is printed too
// (scripts read its code), and returned with its exit status.
func (c *apiCall) do(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, c.url, body)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	if c.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.key != nil {
		req.Header.Set("Authorization", "Bearer "+string(c.key))
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		var netErr net.Error
		if errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) {
			return withStatus(exitUnavailable, "api: server API unreachable at %s: is `imsync serve --api` running, and listening there? (%w)", req.URL.Host, err)
		}
		return fmt.Errorf("api: %w", err)
	}
	defer res.Body.Close()
	answer, err := io.ReadAll(res.Body)
	if err != nil {
		return withStatus(exitUnavailable, "api: reading the answer: %w", err)
	}
	if len(answer) > 0 {
		out.Write(answer)
		if answer[len(answer)-1] != '\n' {
			fmt.Fprintln(out)
		}
	}
	if res.StatusCode/100 == 2 {
		return nil
	}
	var e api.Error
	if json.Unmarshal(answer, &e) != nil || e.Code == 0 {
		return withStatus(statusOfHTTP(res.StatusCode), "api: %s %s: %s", c.method, c.path, res.Status)
	}
	msg := e.Error
	if e.Reason != "" {
		msg += " (reason: " + e.Reason + ")"
	}
	return withStatus(statusOfCode(e.Code), "api: %s %s: %s, code %d: %s", c.method, c.path, res.Status, e.Code, msg)
}

// statusOfCode is the exit status of an error's wire code (an error
// answer of the server API or of the QUIC gateway).
func statusOfCode(code uint32) int {
	switch code {
	case wire.CodeUnauthorized, uint32(actors.Code_FORBIDDEN), uint32(actors.Code_REJECTED):
		return exitRefused
	case uint32(actors.Code_NOT_FOUND), wire.CodeUnknown:
		return exitNotFound
	case uint32(actors.Code_UNAVAILABLE), uint32(actors.Code_CHECK_FAILED), wire.CodeRateLimited, wire.CodeBusy, wire.CodeShutdown, wire.CodeTooMany:
		return exitUnavailable
	}
	return exitError
}

// statusOfHTTP is the exit status of an error answer without a code (a
// proxy's, say).
func statusOfHTTP(status int) int {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return exitRefused
	case status == http.StatusNotFound:
		return exitNotFound
	case status == http.StatusTooManyRequests || status == http.StatusBadGateway ||
		status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout:
		return exitUnavailable
	}
	return exitError
}
