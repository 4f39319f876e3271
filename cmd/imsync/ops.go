package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/ops"
)

// newLogger builds the server's logger from --log-format and --log-level
// (-v is --log-level debug).
func newLogger(w io.Writer, format, level string, verbose bool) (*slog.Logger, error) {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "info", "":
		lv = slog.LevelInfo
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, level)
	}
	if verbose {
		lv = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("%w: --log-format %q: want text or json", errUsage, format)
}

// checkOpsAddr refuses an operations address that is not loopback unless
// public says the operator means it: /metrics and pprof tell a lot about
// a server, and pprof can cost it CPU.
func checkOpsAddr(addr string, public bool) error {
	if addr == "" || public || ops.IsLoopback(addr) {
		return nil
	}
	return fmt.Errorf("%w: --ops %s is not a loopback address: the operations endpoints (metrics, pprof) are not authenticated; put them behind a private network and pass --ops-public to confirm", errUsage, addr)
}

// opsConfig wires metrics into the stack before it starts (nil when
// --ops is not set: nothing is measured); actorMetrics turns
// protoactor-go's own on.
func opsConfig(addr string, actorMetrics bool, tcfg *transport.Config, acfg *actors.Config) error {
	if addr == "" {
		return nil
	}
	m, err := transport.NewMetrics()
	if err != nil {
		return fmt.Errorf("serve: metrics: %w", err)
	}
	tcfg.Metrics, acfg.Metrics = m, m.Actors()
	if !actorMetrics {
		acfg.Metrics.MeterProvider = nil
	}
	return nil
}

// watchStack adds the gauges of the started stack (grains, pebble).
func (st *stack) watch(m *transport.Metrics) {
	if m == nil {
		return
	}
	m.WatchService(st.svc)
	if e, ok := st.store.(*events.Embedded); ok {
		m.WatchStore(e.Stats)
	}
}

// startOps serves the operations endpoints of st on addr.
func (st *stack) startOps(addr string, logger *slog.Logger) (*ops.Server, error) {
	return ops.Listen(addr, ops.Options{Registry: st.srv.Config().Metrics.Registry(), Ready: st.ready, Logger: logger})
}

// errDraining: /readyz while the server drains.
var errDraining = errors.New("draining")

// ready: the store answers a read, the cluster has this member, the
// revocations of other nodes reach this one, the gateway takes
// connections.
func (st *stack) ready(ctx context.Context) error {
	if st.srv.Draining() {
		return errDraining
	}
	if st.svc.Members() < 1 {
		return errors.New("cluster not joined")
	}
	if err := st.srv.Config().Revocations.FollowErr(); err != nil {
		return fmt.Errorf("revocations: %w", err)
	}
	_, err := st.store.ReadStream(ctx, "ready-probe", events.ReadStreamOptions{Limit: 1})
	if err != nil && !errors.Is(err, events.ErrStreamNotFound) {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// drain stops the stack gracefully within timeout: the gateway refuses new
// connections and asks devices to go elsewhere, devices finish their calls
// and leave, and fanout of what was acknowledged settles; then the caller
// closes the grains and the store. What does not settle in time is
// resumed at the next start (the fanout watcher), and nothing acknowledged
// is lost either way.
func (st *stack) drain(timeout time.Duration, logger *slog.Logger) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	connErr := st.srv.Drain(ctx)
	left, fanErr := st.svc.SettleFanout(ctx)
	switch {
	case connErr == nil && fanErr == nil:
		logger.Info("drained", "took", time.Since(start).Round(time.Millisecond).String())
	default:
		logger.Warn("drain timeout", "after", timeout, "fanoutBacklog", left, "connectionsClosed", connErr != nil)
	}
}
