package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// countBudget is a Budget with a cap that records its high-water mark.
type countBudget struct {
	mu        sync.Mutex
	cap, used int
	peak      int
}

func (b *countBudget) Take(n int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.cap {
		return fmt.Errorf("%d + %d bytes over %d", b.used, n, b.cap)
	}
	b.used += n
	b.peak = max(b.peak, b.used)
	return nil
}

func (b *countBudget) Give(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
}

// A frame that announces 1 MiB but sends 10 bytes holds a buffer of the
// first chunk, not of the announced length.
func TestReaderGrowsWithArrivingBytes(t *testing.T) {
	in := binary.AppendUvarint(nil, DefaultMaxFrameSize)
	in = append(in, make([]byte, 10)...)
	b := &countBudget{cap: 1 << 30}
	err := NewReader(bytes.NewReader(in), 0).WithBudget(b).Read(&Request{})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
	if b.peak > firstChunk {
		t.Fatalf("a 10-byte partial frame held %d bytes, want ≤ %d", b.peak, firstChunk)
	}
	if b.used != 0 {
		t.Fatalf("%d bytes not given back", b.used)
	}
}

// A full frame of 300 KiB reads whole; its buffer stays under twice its size.
func TestReaderLargeFrameWithinBudget(t *testing.T) {
	want := &Request{Id: 9, Op: &Request_Send{Send: &Send{Body: bytes.Repeat([]byte("x"), 300<<10)}}}
	f, _ := AppendFrame(nil, want)
	b := &countBudget{cap: 1 << 20}
	var got Request
	if err := NewReader(bytes.NewReader(f), 0).WithBudget(b).Read(&got); err != nil {
		t.Fatal(err)
	}
	if len(got.GetSend().GetBody()) != 300<<10 {
		t.Fatalf("body of %d bytes", len(got.GetSend().GetBody()))
	}
	if b.peak > 2*len(f) || b.used != 0 {
		t.Fatalf("peak %d (frame %d), left %d", b.peak, len(f), b.used)
	}
}

func TestReaderRefusesOverBudget(t *testing.T) {
	f, _ := AppendFrame(nil, &Request{Op: &Request_Send{Send: &Send{Body: make([]byte, 100<<10)}}})
	b := &countBudget{cap: 64 << 10}
	err := NewReader(bytes.NewReader(f), 0).WithBudget(b).Read(&Request{})
	if !errors.Is(err, ErrBudget) {
		t.Fatalf("got %v, want ErrBudget", err)
	}
	if b.used != 0 {
		t.Fatalf("%d bytes not given back", b.used)
	}
}

// A frame that starts and stops fails after the frame timeout; waiting
// between frames has no deadline.
func TestReaderFrameTimeout(t *testing.T) {
	a, z := net.Pipe()
	defer a.Close()
	defer z.Close()
	rd := NewReader(z, 0).WithFrameTimeout(100 * time.Millisecond)
	errc := make(chan error, 2)
	go func() {
		var r Request
		errc <- rd.Read(&r) // a whole frame, after an idle pause longer than the timeout
		errc <- rd.Read(&r) // a frame that stalls
	}()
	time.Sleep(250 * time.Millisecond) // idle between frames: no deadline applies
	f, _ := AppendFrame(nil, &Request{Id: 1})
	if _, err := a.Write(f); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("frame after an idle pause: %v", err)
	}
	if _, err := a.Write([]byte{0x80, 0x01, 1, 2}); err != nil { // 128 bytes announced, 2 sent
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrFrameStalled) {
			t.Fatalf("got %v, want ErrFrameStalled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled frame was never refused")
	}
}
