//go:build deps

// This file is never built (the "deps" tag is never set); it keeps in go.mod
// the modules imsync's design is built on before code imports them, so that
// their versions are pinned and checked together from the start.
package main

import (
	_ "github.com/quic-go/quic-go"
)
