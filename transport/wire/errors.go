package wire

import "fmt"

// Error implements error, so that a protocol error can travel as one.
func (e *Error) Error() string { return fmt.Sprintf("error %d: %s", e.GetCode(), e.GetMessage()) }
