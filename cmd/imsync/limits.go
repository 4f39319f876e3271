package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/transport"
)

// Bounds of the limits serve accepts: past them the documented memory
// bounds per connection and per user (docs/protocol.md, Limits) or the
// grains' state no longer hold.
const (
	maxBodySizeCap   = 256 << 10 // a history page (768 KiB) still holds a few messages
	maxGroupSizeCap  = 1_000_000
	maxConnsPerUser  = 1024
	maxRequestRate   = 1_000_000
	minGroupSizeFlag = 2
	// minRequestRate: one request every 10 s. Below it (1e-300 parses as a
	// positive rate) a connection would never get a token back.
	minRequestRate  = 0.1
	maxRequestBurst = 1_000_000
	// The conversation core counts windows in milliseconds (1ms all but
	// turns recall or edit off), and keeps the sender, time and kind of
	// every message of the longer window, in memory and in its snapshots:
	// a window is at most a week.
	minWindow = time.Millisecond
	maxWindow = 7 * 24 * time.Hour
)

// limitFlags are the serve flags of the limits users can reach
// (actors.Limits and transport.Config).
type limitFlags struct {
	fs                  *flag.FlagSet // to tell the flags given (flag, env or config) from defaults
	requestRate         *float64
	requestBurst        *int
	maxConnsPerUser     *int
	maxGroupSize        *int
	readFanoutThreshold *int
	recallWindow        *time.Duration
	editWindow          *time.Duration
	maxBodySize         *int
}

func registerLimitFlags(fs *flag.FlagSet) *limitFlags {
	d := actors.DefaultLimits()
	return &limitFlags{
		fs:                  fs,
		requestRate:         fs.Float64("request-rate", 2000, fmt.Sprintf("requests per second allowed on one connection, %g to %d (beyond: error 103)", minRequestRate, maxRequestRate)),
		requestBurst:        fs.Int("request-burst", 500, fmt.Sprintf("requests one connection may make at once above --request-rate, 1 to %d", maxRequestBurst)),
		maxConnsPerUser:     fs.Int("max-conns-per-user", 16, "connections of one user at once (beyond: error 104, or the device's oldest is replaced)"),
		maxGroupSize:        fs.Int("max-group-size", d.MaxGroupSize, "members of a group (beyond: error 5 TOO_LARGE)"),
		readFanoutThreshold: fs.Int("read-fanout-threshold", d.ReadFanoutThreshold, "groups with more members than this are read-fanout: members pull the group's timeline instead of getting one sync entry per message; 1 to --max-group-size (when not given: 500, or --max-group-size if smaller)"),
		recallWindow:        fs.Duration("recall-window", d.RecallWindow, fmt.Sprintf("how long after sending a message its sender may recall it, %s to %s", minWindow, maxWindow)),
		editWindow:          fs.Duration("edit-window", d.EditWindow, fmt.Sprintf("how long after sending a message its sender may edit it, %s to %s", minWindow, maxWindow)),
		maxBodySize:         fs.Int("max-body-size", d.MaxBodySize, fmt.Sprintf("bytes of a message body, at most %d (beyond: error 5 TOO_LARGE)", maxBodySizeCap)),
	}
}

// apply checks the limits and sets them in the gateway's and the grains'
// configurations; a bad value is a usage error naming the flag.
func (l *limitFlags) apply(tcfg *transport.Config, acfg *actors.Config) error {
	bad := func(flagName string, v any, want string) error {
		return fmt.Errorf("%w: serve: --%s %v: %s", errUsage, flagName, v, want)
	}
	if !l.given("read-fanout-threshold") {
		// The default follows a smaller --max-group-size instead of
		// refusing a flag the operator did not set.
		*l.readFanoutThreshold = min(*l.readFanoutThreshold, *l.maxGroupSize)
	}
	switch {
	case !(*l.requestRate >= minRequestRate && *l.requestRate <= maxRequestRate): // NaN fails both
		return bad("request-rate", *l.requestRate, fmt.Sprintf("want %g to %d requests per second", minRequestRate, maxRequestRate))
	case *l.requestBurst < 1 || *l.requestBurst > maxRequestBurst:
		return bad("request-burst", *l.requestBurst, fmt.Sprintf("want 1 to %d requests", maxRequestBurst))
	case *l.maxConnsPerUser < 1 || *l.maxConnsPerUser > maxConnsPerUser:
		return bad("max-conns-per-user", *l.maxConnsPerUser, fmt.Sprintf("want 1 to %d", maxConnsPerUser))
	case *l.maxGroupSize < minGroupSizeFlag || *l.maxGroupSize > maxGroupSizeCap:
		return bad("max-group-size", *l.maxGroupSize, fmt.Sprintf("want %d to %d members", minGroupSizeFlag, maxGroupSizeCap))
	case *l.readFanoutThreshold < 1 || *l.readFanoutThreshold > *l.maxGroupSize:
		return bad("read-fanout-threshold", *l.readFanoutThreshold, fmt.Sprintf("want 1 to --max-group-size (%d) members", *l.maxGroupSize))
	case *l.recallWindow < minWindow || *l.recallWindow > maxWindow:
		return bad("recall-window", *l.recallWindow, fmt.Sprintf("want a duration from %s to %s, e.g. 2m", minWindow, maxWindow))
	case *l.editWindow < minWindow || *l.editWindow > maxWindow:
		return bad("edit-window", *l.editWindow, fmt.Sprintf("want a duration from %s to %s, e.g. 15m", minWindow, maxWindow))
	case *l.maxBodySize < 1 || *l.maxBodySize > maxBodySizeCap:
		return bad("max-body-size", *l.maxBodySize, fmt.Sprintf("want 1 to %d bytes", maxBodySizeCap))
	}
	tcfg.RequestsPerSecond = *l.requestRate
	tcfg.RequestBurst = *l.requestBurst
	tcfg.MaxConnsPerUser = *l.maxConnsPerUser
	acfg.Limits.MaxGroupSize = *l.maxGroupSize
	acfg.Limits.ReadFanoutThreshold = *l.readFanoutThreshold
	acfg.Limits.RecallWindow = *l.recallWindow
	acfg.Limits.EditWindow = *l.editWindow
	acfg.Limits.MaxBodySize = *l.maxBodySize
	return nil
}

// given says whether the flag was set on the command line, in the
// environment or in the --config file (all of them set it on l.fs).
func (l *limitFlags) given(name string) bool { return flagGiven(l.fs, name) }
