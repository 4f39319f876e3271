package esdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	client "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/imsync/imsync/events"
)

// mapErr turns what the client returned for an operation on stream into
// the store's typed errors. ctx is the caller's: its end wins.
func (s *Store) mapErr(ctx context.Context, op, stream string, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if s.isClosed() {
		return events.ErrClosed
	}
	if errors.Is(err, events.ErrClosed) || errors.Is(err, events.ErrUnavailable) ||
		errors.Is(err, events.ErrInvalidArgument) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	where := op
	if stream != "" {
		where = fmt.Sprintf("%s %q", op, stream)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		// A request stream that broke under a send: the connection dropped.
		return fmt.Errorf("%w: %s: %v", events.ErrUnavailable, where, err)
	}
	var e *client.Error
	if errors.As(err, &e) {
		switch e.Code() {
		case client.ErrorCodeResourceNotFound:
			return fmt.Errorf("%w: %s", events.ErrStreamNotFound, where)
		case client.ErrorCodeStreamDeleted:
			return fmt.Errorf("%w: %s", events.ErrStreamDeleted, where)
		case client.ErrorUnavailable, client.ErrorCodeConnectionClosed, client.ErrorCodeNotLeader,
			client.ErrorCodeDeadlineExceeded, client.ErrorAborted:
			return fmt.Errorf("%w: %s: %v", events.ErrUnavailable, where, err)
		}
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded, codes.Aborted:
			return fmt.Errorf("%w: %s: %v", events.ErrUnavailable, where, err)
		case codes.NotFound:
			return fmt.Errorf("%w: %s", events.ErrStreamNotFound, where)
		case codes.InvalidArgument:
			return fmt.Errorf("%w: %s: %s", events.ErrInvalidArgument, where, st.Message())
		case codes.FailedPrecondition:
			if strings.Contains(st.Message(), "is deleted") {
				return fmt.Errorf("%w: %s", events.ErrStreamDeleted, where)
			}
		}
	}
	return fmt.Errorf("events/esdb: %s: %w", where, err)
}

// gotRe finds the stream's state in the client's wrong-expected-version
// message of an append ("expecting '3' but got '5'").
var gotRe = regexp.MustCompile(`but got '([^']*)'`)

// actualRe finds it in the server's message for deletes ("..., Actual
// version: 5").
var actualRe = regexp.MustCompile(`Actual version: (-?\d+)`)

// wrongRevision recognises a failed expectation and says where the stream
// is. ok is false when err is something else.
func (s *Store) wrongRevision(ctx context.Context, stream string, expected events.ExpectedRevision, err error) (error, bool) {
	found := false
	actual := ""
	if hasCode(err, client.ErrorCodeWrongExpectedVersion) {
		found = true
		if m := gotRe.FindStringSubmatch(err.Error()); m != nil {
			actual = m[1]
		}
	} else if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition &&
		strings.Contains(strings.ToLower(st.Message()), "wrongexpectedversion") {
		found = true
		if m := actualRe.FindStringSubmatch(st.Message()); m != nil {
			actual = m[1]
		}
	}
	if !found {
		return nil, false
	}
	w := &events.WrongExpectedRevisionError{Stream: stream, Expected: expected}
	switch actual {
	case "no_stream", "-1":
	case "":
		// The message did not say: look.
		last, err := s.ReadStream(ctx, stream, events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 1})
		if err == nil && len(last) == 1 {
			w.Exists, w.Actual = true, last[0].Revision
		}
	default:
		n, perr := strconv.ParseInt(actual, 10, 64)
		if perr == nil && n >= 0 {
			w.Exists, w.Actual = true, events.Revision(n)
		}
	}
	return w, true
}
