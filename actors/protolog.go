package actors

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// repeatWindow is how often one protoactor-go message about one peer is
// let through: the cluster repeats some every second or two while a peer
// is away (health checks, reconnection attempts, gossip).
const repeatWindow = time.Minute

// peerKeys are the attributes by which protoactor-go names the other end
// of a message: a remoting address, a health URL, a member id, a PID.
var peerKeys = map[string]bool{"address": true, "autoManMemberUrl": true, "MemberId": true, "pid": true}

// routine lists protoactor-go messages whose level misleads an operator,
// with the level they get here (after demotion).
var routine = map[string]slog.Level{
	// Logged for every peer whose connection ends, at ERROR, a clean
	// leave (SIGTERM) included. A peer that is really gone is followed by
	// "EndpointWriter failed to connect", which stays an ERROR.
	"EndpointWriter lost connection": slog.LevelInfo,
	// protoactor-go gave up one attempt of a grain call: imsync's own
	// request loop tries again, and the call's caller hears of a failure.
	"Request retried but failed": slog.LevelInfo,
}

// protoactorHandler is protoactor-go's log handler: records one level down
// (demoted), a few routine messages lowered further (routine), and a
// message repeated about the same peer let through once per repeatWindow,
// carrying the number of those held back since (suppressed=N). Messages
// that name no peer pass unchanged.
type protoactorHandler struct {
	demoted
	lim *repeatLimiter
}

func newProtoactorHandler(h slog.Handler) slog.Handler {
	return protoactorHandler{demoted{h}, &repeatLimiter{window: repeatWindow, now: time.Now, seen: map[string]*repeated{}}}
}

func (h protoactorHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Level = demote(r.Level)
	if l, ok := routine[r.Message]; ok && l < r.Level {
		r.Level = l
	}
	if r.Message == "Automanaged server stopping..!" && fmt.Sprint(attrValue(r, "error")) == "http: Server closed" {
		r.Level = slog.LevelInfo // its health server stops with the node
	}
	if !h.demoted.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	if peer, ok := peerOf(r); ok {
		pass, held := h.lim.admit(r.Message + "\x00" + peer)
		if !pass {
			return nil
		}
		if held > 0 {
			r = r.Clone()
			r.AddAttrs(slog.Int("suppressed", held))
		}
	}
	return h.demoted.Handler.Handle(ctx, r)
}

func (h protoactorHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return protoactorHandler{demoted{h.demoted.Handler.WithAttrs(as)}, h.lim}
}

func (h protoactorHandler) WithGroup(n string) slog.Handler {
	return protoactorHandler{demoted{h.demoted.Handler.WithGroup(n)}, h.lim}
}

// peerOf is the value of the record's first peer attribute.
func peerOf(r slog.Record) (string, bool) {
	var peer string
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if peerKeys[a.Key] {
			peer, found = a.Value.String(), true
			return false
		}
		return true
	})
	return peer, found
}

func attrValue(r slog.Record, key string) any {
	var v any
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.Any()
			return false
		}
		return true
	})
	return v
}

// repeatLimiter lets one record per key through per window.
type repeatLimiter struct {
	window time.Duration
	now    func() time.Time

	mu   sync.Mutex
	seen map[string]*repeated
}

type repeated struct {
	passed time.Time // when the last one went through
	held   int       // held back since
}

// admit says whether a record with key goes through now and, if it does,
// how many like it were held back since the last one that did.
func (l *repeatLimiter) admit(key string) (pass bool, held int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.seen[key]; ok && now.Sub(s.passed) < l.window {
		s.held++
		return false, 0
	} else if ok {
		held = s.held
	}
	if len(l.seen) >= 1024 { // peers come and go: forget the quiet ones
		for k, s := range l.seen {
			if now.Sub(s.passed) >= l.window {
				delete(l.seen, k)
			}
		}
	}
	l.seen[key] = &repeated{passed: now}
	return true, held
}
