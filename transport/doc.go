// Package transport is imsync's edge: the QUIC gateway, the wire protocol
// (length-prefixed protobuf frames), authentication and the Go client
// library. See docs/architecture.md.
package transport
