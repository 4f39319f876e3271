package actors

import (
	"container/list"
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
// of a message: a remoting address, a health URL, a member id. Not a PID:
// every process has its own, so keying on them would hold back nothing and
// only fill the limiter.
var peerKeys = map[string]bool{"address": true, "autoManMemberUrl": true, "MemberId": true}

// errorKeys are the attributes carrying a message's error: a different
// error about the same peer (refused, then a certificate failure) is news.
var errorKeys = map[string]bool{"error": true, "err": true}

// repeatLimit bounds the keys the limiter remembers; past it the one let
// through longest ago is forgotten (its next line passes early).
const repeatLimit = 1024

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
// message repeated about the same peer with the same error let through once
// per repeatWindow, carrying the number of those held back since
// (suppressed=N). The count is only ever reported on a later line of the
// same kind: if none comes, what was held back goes unmentioned (the first
// one was logged, and a peer that stays away repeats it). Messages that
// name no peer pass unchanged.
type protoactorHandler struct {
	demoted
	lim *repeatLimiter
}

func newProtoactorHandler(h slog.Handler) slog.Handler {
	return protoactorHandler{demoted{h}, newRepeatLimiter(repeatWindow, repeatLimit)}
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
		pass, held := h.lim.admit(r.Message + "\x00" + peer + "\x00" + errorOf(r))
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
func peerOf(r slog.Record) (string, bool) { return firstOf(r, peerKeys) }

// errorOf is the text of the record's error, "" if it has none.
func errorOf(r slog.Record) string {
	e, _ := firstOf(r, errorKeys)
	return e
}

func firstOf(r slog.Record, keys map[string]bool) (string, bool) {
	var v string
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if keys[a.Key] {
			v, found = a.Value.String(), true
			return false
		}
		return true
	})
	return v, found
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

// repeatLimiter lets one record per key through per window, remembering
// at most limit keys. Its keys are kept in the order they last went
// through, so making room is O(1) per record.
type repeatLimiter struct {
	window time.Duration
	limit  int
	now    func() time.Time

	mu    sync.Mutex
	seen  map[string]*list.Element // of *repeated
	order *list.List               // of *repeated, the one passed longest ago first
}

type repeated struct {
	key    string
	passed time.Time // when the last one went through
	held   int       // held back since
}

func newRepeatLimiter(window time.Duration, limit int) *repeatLimiter {
	return &repeatLimiter{window: window, limit: limit, now: time.Now, seen: map[string]*list.Element{}, order: list.New()}
}

// admit says whether a record with key goes through now and, if it does,
// how many like it were held back since the last one that did.
func (l *repeatLimiter) admit(key string) (pass bool, held int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.seen[key]; ok {
		s := e.Value.(*repeated)
		if now.Sub(s.passed) < l.window {
			s.held++
			return false, 0
		}
		held = s.held
		s.passed, s.held = now, 0
		l.order.MoveToBack(e)
		return true, held
	}
	// Keys whose window has ended stay (their held-back count is reported
	// by their next record) until pushed out by new ones: the one that
	// went through longest ago makes room.
	if l.order.Len() >= l.limit {
		l.remove(l.order.Front())
	}
	l.seen[key] = l.order.PushBack(&repeated{key: key, passed: now})
	return true, 0
}

func (l *repeatLimiter) remove(e *list.Element) {
	delete(l.seen, l.order.Remove(e).(*repeated).key)
}
