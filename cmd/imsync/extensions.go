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

	"github.com/imsync/imsync/projections"
	"github.com/imsync/imsync/projections/webhook"
	"github.com/imsync/imsync/transport/api"
)

// extensionFlags are serve's flags for webhooks and the server API.
type extensionFlags struct {
	webhook, webhookSecret string
	api, apiKey            string
}

// extensions holds what the flags asked for, checked before anything
// starts: a bad flag changes nothing.
type extensions struct {
	webhookURL string
	secret     []byte
	apiAddr    string
	apiKey     []byte
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
		if f.webhook == "" {
			return nil, fmt.Errorf("%w: --webhook-secret needs --webhook", errUsage)
		}
		b, err := os.ReadFile(f.webhookSecret)
		if err != nil {
			return nil, fmt.Errorf("serve: --webhook-secret: %w", err)
		}
		if x.secret = []byte(strings.TrimSpace(string(b))); len(x.secret) == 0 {
			return nil, fmt.Errorf("serve: --webhook-secret: %s is empty", f.webhookSecret)
		}
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
	return stop, nil
}
