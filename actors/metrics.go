package actors

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/metric"
)

// Metrics connects the grains to a metrics system (Config.Metrics). Every
// field is optional.
type Metrics struct {
	// MeterProvider, if set, receives protoactor-go's own actor metrics
	// (mailbox length, message durations, dead letters, futures). Note that
	// protoactor-go also installs it as OpenTelemetry's global provider.
	MeterProvider metric.MeterProvider
	// FanoutLag is called when a conversation's events have reached every
	// member's inbox, with the time since the oldest of them was durable.
	FanoutLag func(time.Duration)
}

// memberCounts are counters of this member (for metrics).
type memberCounts struct {
	fanoutBacklog atomic.Int64
	failedOver    atomic.Int64
}

// GrainCounts is how many grains are active on this member, by kind.
type GrainCounts struct {
	Conversations, Users, Devices int64
}

// GrainsActive counts the grains active on this member (as protoactor-go's
// placement counts them: up at activation, down once stopped).
func (s *Service) GrainsActive() GrainCounts {
	count := func(kind string) int64 {
		if k := s.cluster.GetClusterKind(kind); k != nil {
			return int64(k.Count())
		}
		return 0
	}
	return GrainCounts{Conversations: count(kindConversation), Users: count(kindUser), Devices: count(kindDevice)}
}

// FanoutBacklog is the number of conversation events on this member that
// are appended (or being appended) but not yet in every member's inbox.
func (s *Service) FanoutBacklog() int64 { return s.counts.fanoutBacklog.Load() }

// RequestsFailedOver counts the grain requests this member sent again to a
// grain's new owner because the member hosting it left while they waited.
func (s *Service) RequestsFailedOver() int64 { return s.counts.failedOver.Load() }

// SettleFanout waits until the fanout backlog of this member is empty, or
// ctx ends (then it returns ctx's error and the backlog left). Fanout that
// does not finish is resumed at the next start (see fanoutWatch).
func (s *Service) SettleFanout(ctx context.Context) (int64, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		n := s.FanoutBacklog()
		if n <= 0 {
			return 0, nil
		}
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-t.C:
		}
	}
}

// countBacklog adds the change of the grain's fanout backlog since the
// last count to the member's total; a stopped grain counts none.
func (g *conversationGrain) countBacklog(stopped bool) {
	n := len(g.fanout.staged) + len(g.fanout.pending)
	if stopped {
		n = 0
	}
	if d := n - g.backlog; d != 0 {
		g.svc.counts.fanoutBacklog.Add(int64(d))
		g.backlog = n
	}
}

// observeFanout reports the lag of the oldest item of a finished batch.
func (g *conversationGrain) observeFanout(done []fanoutItem) {
	h := g.svc.cfg.Metrics.FanoutLag
	if h == nil || len(done) == 0 || done[0].durableAt.IsZero() {
		return
	}
	h(time.Since(done[0].durableAt))
}

// protoactorLogger routes protoactor-go's logs into logger, one level
// down (its Info is our Debug), tagged lib=protoactor: its routine
// messages (members joining, activations) are not an operator's concern
// unless asked for, its warnings and errors are.
func protoactorLogger(logger *slog.Logger) func(*actor.ActorSystem) *slog.Logger {
	return func(*actor.ActorSystem) *slog.Logger {
		return slog.New(newProtoactorHandler(logger.Handler())).With("lib", "protoactor")
	}
}

// demoted lowers Info records to Debug (and Debug further).
type demoted struct{ slog.Handler }

func demote(l slog.Level) slog.Level {
	if l < slog.LevelWarn {
		return l - 4
	}
	return l
}

func (d demoted) Enabled(ctx context.Context, l slog.Level) bool {
	return d.Handler.Enabled(ctx, demote(l))
}

func (d demoted) Handle(ctx context.Context, r slog.Record) error {
	r.Level = demote(r.Level)
	return d.Handler.Handle(ctx, r)
}

func (d demoted) WithAttrs(as []slog.Attr) slog.Handler { return demoted{d.Handler.WithAttrs(as)} }
func (d demoted) WithGroup(n string) slog.Handler       { return demoted{d.Handler.WithGroup(n)} }
