package transport

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/imsync/imsync/actors"
)

// Memory limits of the gateway (docs/protocol.md, "Limits"). Together
// they bound what one connection can make the server hold: the QUIC
// receive window (512 KiB) + Config.ReadBudget (1 MiB) +
// Config.WriteBudget (2 MiB) + maxStreams streams of about 8 KiB each
// (goroutine, reader) = 4 MiB by default; 64 MiB for a user's 16
// connections.
const (
	// maxHelloSize bounds the Hello and every later control frame (tokens
	// are under 1 KiB).
	maxHelloSize = 4 << 10
	// quicReceiveWindow bounds, per connection, the bytes the peer may
	// send that the server has not read yet (QUIC flow control).
	quicReceiveWindow = 512 << 10
	// maxStreams is the number of streams a connection may have open.
	maxStreams = 64
	// answerReserve is what a bulky answer (a page) reserves of the write
	// budget before it is computed: a page of actors.MaxPageBytes with its
	// envelope, twice (decoded, then encoded). With the default budget one
	// page per connection is in the making at a time.
	answerReserve = 2 * (actors.MaxPageBytes + 64<<10)
	// smallReserve is what any other answer reserves (its bytes and the
	// goroutine that computes it).
	smallReserve = 8 << 10
)

// byteBudget counts bytes held for one connection. Take refuses at once
// when the budget is spent (for bytes the peer pushes at us); acquire
// waits for room (for answers: the peer's reading frees it).
type byteBudget struct {
	mu    sync.Mutex
	size  int
	used  int
	freed chan struct{} // closed and replaced whenever bytes are given back
}

func newByteBudget(size int) *byteBudget {
	return &byteBudget{size: size, freed: make(chan struct{})}
}

// Take implements wire.Budget.
func (b *byteBudget) Take(n int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.size {
		return fmt.Errorf("%d bytes in use, %d more asked, budget %d", b.used, n, b.size)
	}
	b.used += n
	return nil
}

// Give implements wire.Budget.
func (b *byteBudget) Give(n int) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}

// acquire takes n bytes, waiting up to wait for room.
func (b *byteBudget) acquire(ctx context.Context, n int, wait time.Duration) error {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		b.mu.Lock()
		if b.used+n <= b.size {
			b.used += n
			b.mu.Unlock()
			return nil
		}
		freed := b.freed
		b.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return fmt.Errorf("no room for a %d-byte answer in %v: answers are not being read", n, wait)
		}
	}
}

// inUse is the number of bytes held (for tests and metrics).
func (b *byteBudget) inUse() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
