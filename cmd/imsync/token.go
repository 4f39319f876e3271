package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/transport"
)

// stringsFlag is a flag that may be given more than once.
type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

// runToken mints a device token (a JWT) with the development key of a
// server's data directory, or prints a JSON Web Key Set (--print-jwks):
// of that key, or of the Ed25519 keys in PEM files (--key).
func runToken(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	data := fs.String("data", "", "data directory of the server")
	user := fs.String("user", "", "user id")
	device := fs.String("device", "", "device id")
	ttl := fs.Duration("ttl", 24*time.Hour, "lifetime")
	audience := fs.String("jwt-audience", "", "the aud claim (the server's --jwt-audience)")
	issuer := fs.String("jwt-issuer", "", "the iss claim (the server's --jwt-issuer)")
	printJWKS := fs.Bool("print-jwks", false, "print a JSON Web Key Set instead: the public key of --data's development key, or of each --key")
	var pemKeys stringsFlag
	fs.Var(&pemKeys, "key", "with --print-jwks: an Ed25519 key in PEM (private or public; repeatable)")
	kid := fs.String("kid", "", "with --print-jwks --key: the key id (default: the key's RFC 7638 thumbprint; one --key only)")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: token takes no arguments, not %q", errUsage, fs.Args())
	}
	if *printJWKS && len(pemKeys) > 0 {
		return printPEMJWKS(pemKeys, *kid, *data, out)
	}
	if len(pemKeys) > 0 || *kid != "" {
		return fmt.Errorf("%w: token takes --key and --kid only with --print-jwks", errUsage)
	}
	if *data == "" || (!*printJWKS && (*user == "" || *device == "")) {
		return fmt.Errorf("%w: token needs --data, --user and --device (or --print-jwks with --data or --key)", errUsage)
	}
	if !*printJWKS {
		// Bad values are a bad command line (exit 2), found before any file is read.
		if err := actors.ValidateID("user", *user); err != nil {
			return fmt.Errorf("%w: token: --user: %v", errUsage, err)
		}
		if err := actors.ValidateID("device", *device); err != nil {
			return fmt.Errorf("%w: token: --device: %v", errUsage, err)
		}
		if *ttl <= 0 {
			return fmt.Errorf("%w: token: --ttl %s: want a positive lifetime, e.g. 1h", errUsage, *ttl)
		}
	}
	key, err := transport.LoadKey(*data)
	if errors.Is(err, transport.ErrNoKey) {
		abs, _ := filepath.Abs(*data)
		return fmt.Errorf("token: %s is not the data directory of a server that has started (%w); pass the --data the server runs with", abs, err)
	}
	if err != nil {
		return err
	}
	if *printJWKS {
		_, err := out.Write(transport.MarshalJWKS(key.PublicJWK()))
		return err
	}
	tok, err := key.MintFor(*user, *device, *ttl, time.Now(), transport.TokenRules{Audience: *audience, Issuer: *issuer})
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}

// printPEMJWKS prints the JWKS of the public keys in files.
func printPEMJWKS(files []string, kid, data string, out io.Writer) error {
	if data != "" {
		return fmt.Errorf("%w: token --print-jwks takes --data or --key, not both", errUsage)
	}
	if kid != "" && len(files) > 1 {
		return fmt.Errorf("%w: token --kid names one --key; with several, each key's id is its thumbprint", errUsage)
	}
	var keys []transport.JWK
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		pub, err := transport.ParseEd25519PEM(b)
		if err != nil {
			return fmt.Errorf("token: %s: %w", f, err)
		}
		keys = append(keys, transport.PublicJWK(pub, kid))
	}
	_, err := out.Write(transport.MarshalJWKS(keys...))
	return err
}
