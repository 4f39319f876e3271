package wire

import (
	"errors"
	"fmt"
)

// Error implements error, so that a protocol error can travel as one.
func (e *Error) Error() string { return fmt.Sprintf("error %d: %s", e.GetCode(), e.GetMessage()) }

// ErrBadToken matches (errors.Is) every *Error with code 102
// (CodeUnauthorized): a token refused at login or on re-authentication, or
// a connection closed because its token expired.
var ErrBadToken = errors.New("bad token")

// Is makes errors.Is(err, ErrBadToken) hold for code 102.
func (e *Error) Is(target error) bool {
	return target == ErrBadToken && e.GetCode() == CodeUnauthorized
}
