package projections_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections"
)

// messageCounts counts the messages sent in each conversation. Its state
// lives in memory and is saved with the checkpoint (Stateful).
type messageCounts struct {
	mu     sync.Mutex
	counts map[string]int
}

func (*messageCounts) Name() string { return "message-counts" }

func (*messageCounts) Filter() events.Filter {
	return events.Filter{StreamPrefixes: []string{events.ConversationPrefix}}
}

func (m *messageCounts) Handle(_ context.Context, e projections.Event) error {
	if _, ok := e.Message.(*eventspb.MessageSent); ok {
		m.mu.Lock()
		m.counts[strings.TrimPrefix(e.Stream, events.ConversationPrefix)]++
		m.mu.Unlock()
	}
	return nil
}

func (m *messageCounts) Snapshot() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return json.Marshal(m.counts)
}

func (m *messageCounts) Restore(state []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts = map[string]int{}
	if state == nil {
		return nil
	}
	return json.Unmarshal(state, &m.counts)
}

// get returns a copy of the counts (safe while the runner runs).
func (m *messageCounts) get() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int, len(m.counts))
	for k, v := range m.counts {
		out[k] = v
	}
	return out
}

func (m *messageCounts) total() int {
	n := 0
	for _, v := range m.get() {
		n += v
	}
	return n
}

func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, _ := events.OpenInMemory(events.Options{})
	defer store.Close()
	for i := range 3 {
		e, _ := events.Encode([16]byte{}, &eventspb.MessageSent{Sender: "ann", Body: []byte(fmt.Sprint("hi ", i))})
		store.AppendToStream(ctx, events.ConversationStream("c1"), events.Any, e)
	}

	counts := &messageCounts{}
	runner := &projections.Runner{
		Store:       store,
		Checkpoints: &projections.MemoryCheckpoints{}, // projections.FileCheckpoints{Dir: ...} on disk
		Projection:  counts,
	}
	done := make(chan error, 1)
	go func() { done <- runner.Run(ctx) }() // history, then live, until ctx ends
	for counts.total() < 3 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	fmt.Println(<-done, counts.get())
	// Output: context canceled map[c1:3]
}
