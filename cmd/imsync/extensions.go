package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/projections"
	"github.com/imsync/imsync/projections/webhook"
	"github.com/imsync/imsync/transport/api"
)

// extensionFlags are serve's flags for webhooks and the server API.
type extensionFlags struct {
	webhook, webhookSecret string
	api, apiKey            string

	beforeSend, beforeSendSecret, beforeSendFail string
	beforeSendTimeout                            time.Duration
}

// defaultBeforeSendTimeout leaves room, within actors.MaxChecksTimeout,
// for the checks of plugin packages.
const defaultBeforeSendTimeout = time.Second

// extensions holds what the flags asked for, checked before anything
// starts: a bad flag changes nothing.
type extensions struct {
	webhookURL string
	secret     []byte
	apiAddr    string
	apiKey     []byte
	beforeSend *webhook.BeforeSend // nil: no before-send webhook
}

// actorExtensions are the checks the flags add to the grains.
func (x *extensions) actorExtensions() actors.Extensions {
	if x == nil || x.beforeSend == nil {
		return actors.Extensions{}
	}
	return actors.Extensions{Checks: []actors.Check{x.beforeSend.AsCheck()}}
}

// readSecret reads a secret file: its content without surrounding white
// space, not empty.
func readSecret(flagName, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("serve: --%s: %w", flagName, err)
	}
	secret := []byte(strings.TrimSpace(string(b)))
	if len(secret) == 0 {
		return nil, fmt.Errorf("serve: --%s: %s is empty", flagName, path)
	}
	return secret, nil
}

func (f extensionFlags) check() (*extensions, error) {
	x := &extensions{webhookURL: f.webhook, apiAddr: f.api}
	if f.webhook != "" {
		u, err := url.Parse(f.webhook)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: --webhook %q: want an http:// or https:// URL", errUsage, f.webhook)
		}
	}
	if f.webhookSecret != "" {
		if f.webhook == "" && f.beforeSend == "" {
			return nil, fmt.Errorf("%w: --webhook-secret needs --webhook or --before-send-webhook", errUsage)
		}
		var err error
		if x.secret, err = readSecret("webhook-secret", f.webhookSecret); err != nil {
			return nil, err
		}
	}
	if err := f.checkBeforeSend(x); err != nil {
		return nil, err
	}
	if f.api != "" {
		if f.apiKey == "" {
			return nil, fmt.Errorf("%w: --api needs --api-key FILE: the server API never runs without a key", errUsage)
		}
		k, err := api.LoadKey(f.apiKey)
		if err != nil {
			return nil, fmt.Errorf("serve: --api-key: %w", err)
		}
		x.apiKey = k
	} else if f.apiKey != "" {
		return nil, fmt.Errorf("%w: --api-key needs --api ADDR", errUsage)
	}
	return x, nil
}

// checkBeforeSend reads the --before-send-* flags into x.beforeSend.
func (f extensionFlags) checkBeforeSend(x *extensions) error {
	if f.beforeSend == "" {
		if f.beforeSendSecret != "" {
			return fmt.Errorf("%w: --before-send-secret needs --before-send-webhook", errUsage)
		}
		return nil
	}
	b := &webhook.BeforeSend{URL: f.beforeSend, Secret: x.secret, Timeout: f.beforeSendTimeout}
	if err := b.Validate(); err != nil {
		return fmt.Errorf("%w: --before-send-webhook: %v", errUsage, err)
	}
	policy := f.beforeSendFail
	if policy == "" {
		policy = "closed"
	}
	var err error
	if b.FailOpen, err = webhook.ParseFailPolicy(policy); err != nil {
		return fmt.Errorf("%w: --before-send-fail: %v", errUsage, err)
	}
	// The webhook's timeout is its check's deadline; all checks together
	// get at most actors.MaxChecksTimeout, plugin packages' included.
	budget := actors.MaxChecksTimeout
	for _, c := range actors.Registered().Checks {
		if c.Timeout <= 0 {
			c.Timeout = actors.DefaultCheckTimeout
		}
		budget -= c.Timeout
	}
	if b.Timeout <= 0 || b.Timeout > budget {
		return fmt.Errorf("%w: --before-send-timeout %s: want more than 0 and at most %s (all checks together get at most %s)",
			errUsage, b.Timeout, budget, actors.MaxChecksTimeout)
	}
	if f.beforeSendSecret != "" {
		if b.Secret, err = readSecret("before-send-secret", f.beforeSendSecret); err != nil {
			return err
		}
	}
	x.beforeSend = b
	return nil
}

// start runs the webhook sender and the API listener on st; stop ends
// them (before the stack closes).
func (x *extensions) start(st *stack, data string, logger *slog.Logger, out io.Writer) (stop func(), err error) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var httpSrv *http.Server
	stop = func() {
		if httpSrv != nil {
			sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
			httpSrv.Shutdown(sctx)
			c()
		}
		cancel()
		wg.Wait()
	}
	if x.webhookURL != "" {
		svc := st.svc
		s, err := webhook.New(webhook.Config{
			Store: st.store, Checkpoints: projections.FileCheckpoints{Dir: checkpointDir(data)},
			URL: x.webhookURL, Secret: x.secret, Logger: logger,
			Devices: func(ctx context.Context, user, device string) (bool, uint64, error) {
				d, err := svc.Device(ctx, user, device)
				if err != nil {
					return false, 0, err
				}
				return d.Online, d.AckedUserSeq, nil
			},
		})
		if err != nil {
			stop()
			return nil, fmt.Errorf("serve: --webhook: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				err := s.Run(ctx)
				if ctx.Err() != nil {
					return
				}
				logger.Error("webhook stopped; starting again from its checkpoint", "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		}()
		fmt.Fprintf(out, "webhook: posting to %s\n", x.webhookURL)
	}
	if x.apiAddr != "" {
		a, err := api.New(api.Config{Service: st.svc, Gateway: st.srv, Key: x.apiKey, Logger: logger})
		if err != nil {
			stop()
			return nil, fmt.Errorf("serve: --api: %w", err)
		}
		ln, err := net.Listen("tcp", x.apiAddr)
		if err != nil {
			stop()
			return nil, fmt.Errorf("serve: --api: %w", err)
		}
		httpSrv = &http.Server{Handler: a, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("server API stopped", "err", err)
			}
		}()
		fmt.Fprintf(out, "server API on http://%s\n", ln.Addr())
	}
	if b := x.beforeSend; b != nil {
		policy := "closed"
		if b.FailOpen {
			policy = "open"
		}
		fmt.Fprintf(out, "before-send webhook: %s (timeout %s, fail %s)\n", b.URL, b.Timeout, policy)
	}
	return stop, nil
}
