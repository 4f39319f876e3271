// Package protoconflict lets protoactor-go's cluster and the EventStoreDB
// client live in one binary.
//
// Both register a protobuf file named "gossip.proto" (with different
// message names). The protobuf runtime panics at start-up on such a clash
// unless GOLANG_PROTOBUF_REGISTRATION_CONFLICT says otherwise, and it reads
// that variable at the moment of the clash, during package initialisation.
//
// This package sets the variable to "ignore" in its init, unless the user
// set it. Go initialises packages in import-path order among those whose
// imports are done; this package imports only os, which the protobuf
// registry itself imports, and its path sorts before
// google.golang.org/protobuf, so it runs before any generated .pb.go
// package registers a file. Import it (blank) from every package that links
// the EventStoreDB client. The test in this package links both clashing
// packages: if the order ever changes, it panics at start-up and fails.
package protoconflict

import "os"

// EnvVar is the protobuf runtime's switch for registration conflicts.
const EnvVar = "GOLANG_PROTOBUF_REGISTRATION_CONFLICT"

// SetByUs reports whether this package set EnvVar (rather than the user).
var SetByUs bool

func init() {
	if _, ok := os.LookupEnv(EnvVar); !ok {
		os.Setenv(EnvVar, "ignore")
		SetByUs = true
	}
}
