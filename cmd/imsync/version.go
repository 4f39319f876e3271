package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime/debug"
	"slices"
	"strings"
)

// buildInfo is what `imsync version` reports, read from the build.
type buildInfo struct {
	Module   string `json:"module"`
	Version  string `json:"version"`
	Go       string `json:"go"`
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
}

func readBuildInfo() buildInfo {
	info, _ := debug.ReadBuildInfo()
	return buildInfoFrom(info)
}

func buildInfoFrom(info *debug.BuildInfo) buildInfo {
	bi := buildInfo{Module: "github.com/imsync/imsync", Version: "(unknown)"}
	if info == nil {
		return bi
	}
	bi.Go = info.GoVersion
	if info.Main.Path != "" {
		bi.Module, bi.Version = info.Main.Path, info.Main.Version
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			bi.Revision = s.Value
		case "vcs.time":
			bi.Time = s.Value
		case "vcs.modified":
			bi.Modified = s.Value == "true"
		}
	}
	return bi
}

// runVersion is `imsync version`.
func runVersion(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("version")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: version takes no arguments", errUsage)
	}
	bi := readBuildInfo()
	if *asJSON {
		b, _ := json.Marshal(bi)
		_, err := fmt.Fprintln(out, string(b))
		return err
	}
	_, err := fmt.Fprintln(out, bi.String())
	return err
}

// String is the line `imsync version` prints.
func (bi buildInfo) String() string {
	line := []string{"imsync", bi.Version, bi.Module, bi.Go}
	if bi.Revision != "" {
		line = append(line, "revision "+bi.Revision, bi.Time)
	}
	if bi.Modified {
		line = append(line, "(modified)")
	}
	line = slices.DeleteFunc(line, func(s string) bool { return s == "" })
	return strings.Join(line, " ")
}
