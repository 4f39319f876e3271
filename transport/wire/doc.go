// Package wire is the imsync wire protocol: the protobuf messages
// (imsync_wire.proto) and their framing on QUIC streams.
//
// # Usage
//
//	wire.WriteFrame(stream, &wire.Hello{Token: token})     // uvarint length + protobuf
//	rd := wire.NewReader(stream, wire.DefaultMaxFrameSize) // refuses larger frames unread
//	var push wire.ServerPush
//	if err := rd.Read(&push); err != nil { ... }          // io.EOF, ErrFrameTooLarge, ErrBadFrame
//
// A Reader's buffer grows as a frame's bytes arrive. A server bounds a
// connection's frames in progress with WithBudget (ErrBudget beyond it)
// and a frame's duration with WithFrameTimeout (ErrFrameStalled).
//
// docs/protocol.md describes the streams, the login, the requests, the
// sync rule and the error codes.
package wire
