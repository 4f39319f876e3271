package esdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/imsync/imsync/events"
)

// TestMapErr: what servers answer in gRPC statuses (and the client passes
// on, wrapped) becomes the store's typed errors.
func TestMapErr(t *testing.T) {
	s := &Store{done: make(chan struct{})}
	ctx := context.Background()
	wrap := func(err error) error { return fmt.Errorf("failed to perform delete, details: %w", err) }
	cases := []struct {
		err  error
		want error
	}{
		{status.Error(codes.Unavailable, "connection refused"), events.ErrUnavailable},
		{wrap(status.Error(codes.Unavailable, "transport is closing")), events.ErrUnavailable},
		{status.Error(codes.DeadlineExceeded, "deadline"), events.ErrUnavailable},
		{status.Error(codes.Canceled, "client connection is closing"), events.ErrUnavailable},
		{status.Error(codes.Aborted, "aborted"), events.ErrUnavailable},
		{wrap(status.Error(codes.NotFound, "Event stream 'x' is not found.")), events.ErrStreamNotFound},
		{wrap(status.Error(codes.FailedPrecondition, "Event stream 'x' is deleted.")), events.ErrStreamDeleted},
		{status.Error(codes.InvalidArgument, "Maximum Append Size of 4194304 Exceeded."), events.ErrInvalidArgument},
		{fmt.Errorf("could not send append request. Reason: %w", io.EOF), events.ErrUnavailable},
	}
	for _, c := range cases {
		if got := s.mapErr(ctx, "op", "x", c.err); !errors.Is(got, c.want) {
			t.Errorf("%v: mapped to %v, want %v", c.err, got, c.want)
		}
	}
	// Access denied is no typed error, but keeps the cause.
	denied := status.Error(codes.PermissionDenied, "Access Denied")
	if got := s.mapErr(ctx, "op", "x", denied); !errors.Is(got, denied) || errors.Is(got, events.ErrUnavailable) {
		t.Errorf("access denied mapped to %v", got)
	}
	// The caller's context wins.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if got := s.mapErr(cancelled, "op", "x", status.Error(codes.Canceled, "context canceled")); !errors.Is(got, context.Canceled) {
		t.Errorf("cancelled call mapped to %v", got)
	}
}

// TestWrongRevisionFromDeleteMessage: EventStoreDB answers a delete at the
// wrong revision with a status whose message may say the actual version.
func TestWrongRevisionFromDeleteMessage(t *testing.T) {
	s := &Store{done: make(chan struct{})}
	ctx := context.Background()
	for msg, want := range map[string]events.WrongExpectedRevisionError{
		"Append failed due to WrongExpectedVersion. Stream: x, Expected version: 1, Actual version: 5":  {Stream: "x", Expected: events.Exactly(1), Actual: 5, Exists: true},
		"Append failed due to WrongExpectedVersion. Stream: x, Expected version: 1, Actual version: -1": {Stream: "x", Expected: events.Exactly(1)},
	} {
		err, ok := s.wrongRevision(ctx, "x", events.Exactly(1), status.Error(codes.FailedPrecondition, msg))
		var w *events.WrongExpectedRevisionError
		if !ok || !errors.As(err, &w) || *w != want {
			t.Errorf("%q: %v, %v; want %+v", msg, err, ok, want)
		}
	}
	if _, ok := s.wrongRevision(ctx, "x", events.Any, status.Error(codes.FailedPrecondition, "Event stream 'x' is deleted.")); ok {
		t.Error("a deleted stream taken for a wrong revision")
	}
}
