package testserver

import (
	"context"
	"errors"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/imsync/imsync/events"
)

// Trailer keys and values of EventStoreDB's errors, as the client reads them.
const (
	trailerException     = "exception"
	trailerStreamName    = "stream-name"
	exStreamDeleted      = "stream-deleted"
	exWrongExpected      = "wrong-expected-version"
	exMaxAppendSize      = "maximum-append-size-exceeded"
	trailerExpected      = "expected-version"
	trailerActual        = "actual-version"
	trailerMaxAppendSize = "maximum-append-size"
)

// rpcError turns an error of the store (or of request decoding) into the
// status and trailers EventStoreDB sends for it. stream names the stream
// the request was about.
func rpcError(ctx context.Context, err error, stream string) error {
	var wrong *events.WrongExpectedRevisionError
	switch {
	case errors.Is(err, events.ErrStreamDeleted):
		setTrailer(ctx, trailerException, exStreamDeleted, trailerStreamName, stream)
		return status.Errorf(codes.FailedPrecondition, "Event stream '%s' is deleted.", stream)
	case errors.As(err, &wrong):
		actual := int64(-1)
		if wrong.Exists {
			actual = int64(wrong.Actual)
		}
		setTrailer(ctx, trailerException, exWrongExpected, trailerStreamName, stream,
			trailerExpected, strconv.FormatInt(expectedVersionNumber(wrong.Expected), 10),
			trailerActual, strconv.FormatInt(actual, 10))
		return status.Errorf(codes.FailedPrecondition, "Append failed due to WrongExpectedVersion. Stream: %s, Expected version: %d, Actual version: %d",
			stream, expectedVersionNumber(wrong.Expected), actual)
	case errors.Is(err, events.ErrInvalidArgument):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, events.ErrCorrupt):
		return status.Error(codes.Internal, err.Error())
	}
	// Closed, failed or otherwise unreachable store: the client treats
	// Unavailable as "rediscover the node and retry".
	return status.Error(codes.Unavailable, err.Error())
}

func invalidArgument(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func maxAppendSizeExceeded(ctx context.Context) error {
	setTrailer(ctx, trailerException, exMaxAppendSize, trailerMaxAppendSize, strconv.Itoa(events.MaxAppendSize))
	return status.Errorf(codes.InvalidArgument, "Maximum Append Size of %d Exceeded.", events.MaxAppendSize)
}

func setTrailer(ctx context.Context, kv ...string) {
	// Fails only when the RPC already ended; then nobody reads it.
	_ = grpc.SetTrailer(ctx, metadata.Pairs(kv...))
}
