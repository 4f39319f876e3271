package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// idleCheck is a grain's passivation clock. protoactor-go's own receive
// timeout races with the mailbox (its timer goroutine writes the actor's
// context) and is not re-armed once it fired, so grains use this instead:
// a timer that only sends the grain a message, and state the grain alone
// touches.
type idleCheck struct {
	after  time.Duration
	seen   uint64 // messages received (a counter: cheaper than a clock read per message)
	atTick uint64 // seen at the previous tick
	quiet  int    // ticks in a row without a message
	timer  *time.Timer
}

// idleTick is what the timer sends; the grain answers it with idle.expired.
type idleTick struct{}

func (i *idleCheck) start(ctx actor.Context, after time.Duration) {
	i.after = after
	i.arm(ctx)
}

func (i *idleCheck) arm(ctx actor.Context) {
	root, self := ctx.ActorSystem().Root, ctx.Self()
	i.timer = time.AfterFunc(i.after/2, func() { root.Send(self, &idleTick{}) })
}

// touch records activity: any message but the tick itself.
func (i *idleCheck) touch() { i.seen++ }

// expired reports whether the grain has been idle long enough (two ticks,
// half a period apart, with no message between them); if not, or if busy
// says the grain cannot stop yet, it re-arms the timer.
func (i *idleCheck) expired(ctx actor.Context, busy bool) bool {
	if i.seen == i.atTick {
		i.quiet++
	} else {
		i.quiet, i.atTick = 0, i.seen
	}
	if !busy && i.quiet >= 2 {
		return true
	}
	i.arm(ctx)
	return false
}

func (i *idleCheck) stop() {
	if i.timer != nil {
		i.timer.Stop()
	}
}
