package actors

import (
	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"
)

// checkedWrite is a write command waiting in a conversation grain for its
// checks, or behind others that wait.
type checkedWrite struct {
	cmd     proto.Message
	sender  *actor.PID
	done    bool
	failure *Failure // the checks refused it (or failed, fail-closed)
	// unchecked: the rules alone answered it (refusal, duplicate), so the
	// checks did not run.
	unchecked bool
}

// checksDone comes back to the grain from the goroutine that ran a write's
// checks: the draft they left, or the failure to answer.
type checksDone struct {
	w       *checkedWrite
	draft   *Draft
	failure *Failure
}

// submit decides a write now, or queues it behind the checks it needs.
//
// Checks run off the grain's goroutine (a slow check does not hold up the
// conversation's other work: acknowledgements, fanout, reads), several at a
// time, but writes are decided in the order they arrived: a write waits for
// the checks of every write before it. The queue is only in use while
// checks are running, so a conversation without checks pays nothing.
func (g *conversationGrain) submit(ctx actor.Context, cmd proto.Message) {
	checks := g.svc.ext.checks
	draft := draftOf(g.id, cmd)
	if e, ok := cmd.(*EditMessage); ok && draft != nil && g.state != nil {
		// Checks see what is edited: the message's kind and reply-to.
		if info := g.state.recent[e.Seq]; info != nil {
			draft.Kind, draft.replyTo = info.kind, info.replyTo
		}
	}
	if len(g.checking) == 0 && (len(checks) == 0 || draft == nil) {
		g.write(ctx, ctx.Sender(), cmd, false)
		return
	}
	w := &checkedWrite{cmd: cmd, sender: ctx.Sender()}
	g.checking = append(g.checking, w)
	if draft == nil {
		w.done = true
		g.decideChecked(ctx)
		return
	}
	// Checks see only what the rules would accept: a duplicate of a stored
	// send, a stranger's message or an oversized one is answered by the
	// rules alone, so a retried send never gets a second, different
	// verdict. (The decision in order below stays the one that counts: it
	// also sees the writes queued before this one.)
	answered := func() bool {
		_, written, f := decideConv(g.state, cmd, g.svc.cfg.Now(), g.svc.cfg.Limits)
		return f != nil || written.Duplicate
	}
	// (A stale state may answer what the stream would not: catchUp.)
	if answered() {
		if reloaded, _ := g.catchUp(ctx); !reloaded || answered() {
			w.done, w.unchecked = true, len(checks) > 0
			g.decideChecked(ctx)
			return
		}
	}
	root, self, log := ctx.ActorSystem().Root, ctx.Self(), g.svc.log
	conv := g.id
	go func() {
		out, f := runChecks(checks, draft, func(name string, err error) {
			log.Warn("check failed", "check", name, "conversation", conv, "err", err)
		})
		root.Send(self, &checksDone{w: w, draft: out, failure: f})
	}()
}

// decideChecked decides the queued writes whose checks are done, in order,
// up to the first one still being checked.
func (g *conversationGrain) decideChecked(ctx actor.Context) {
	for len(g.checking) > 0 && g.checking[0].done {
		w := g.checking[0]
		g.checking[0] = nil
		g.checking = g.checking[1:]
		if w.failure != nil {
			answer(ctx, w.sender, w.failure)
			continue
		}
		if g.broken {
			if err := g.reload(ctx); err != nil {
				answer(ctx, w.sender, unavailable(err))
				continue
			}
			g.broken = false
		}
		g.write(ctx, w.sender, w.cmd, w.unchecked)
	}
	if len(g.checking) == 0 {
		g.checking = nil
	}
}

// answer replies to the requester of a write, if there is one (a write sent
// without a sender has no one to answer; a nil PID must not reach protoactor).
func answer(ctx actor.Context, to *actor.PID, msg proto.Message) {
	if to != nil {
		ctx.Send(to, msg)
	}
}
