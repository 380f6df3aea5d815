package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"regexp"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// LoadError is a config file that could not be used: it names the file, and the key
// when one key is to blame.
type LoadError struct {
	File string
	Key  string
	Err  error
}

func (e *LoadError) Error() string {
	if e.Key != "" {
		return fmt.Sprintf("%s: %s: %v", e.File, e.Key, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.File, e.Err)
}

func (e *LoadError) Unwrap() error { return e.Err }

// Load reads the YAML file at path over the defaults and validates the result.
// An empty path gives the defaults. A missing file that was asked for is an error.
func Load(path string) (*Config, error) {
	c := Default()
	if path == "" {
		return &c, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &LoadError{File: path, Err: err}
	}
	return Parse(path, data)
}

// Parse decodes YAML bytes (named by file in errors) over the defaults and validates them.
func Parse(file string, data []byte) (*Config, error) {
	c := Default()
	// "::" rather than ".": map keys such as label names (app.kubernetes.io/name) and
	// header names keep their dots instead of becoming nested keys.
	v := viper.NewWithOptions(viper.KeyDelimiter("::"))
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, &LoadError{File: file, Err: fmt.Errorf("not valid YAML: %w", errors.Unwrap(err))}
	}
	// UnmarshalExact rejects keys the schema does not know, so a typo is an error
	// rather than a setting that silently does nothing.
	if err := v.UnmarshalExact(&c, func(dc *mapstructure.DecoderConfig) {
		dc.WeaklyTypedInput = false
		dc.ZeroFields = true // a list in the file replaces the default list
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(dc.DecodeHook, strictHook)
	}); err != nil {
		return nil, decodeError(file, err)
	}
	if err := c.Validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			return nil, &LoadError{File: file, Key: fe.Key, Err: errors.New(fe.Reason)}
		}
		return nil, &LoadError{File: file, Err: err}
	}
	return &c, nil
}

var (
	unknownKeysRe = regexp.MustCompile(`'([^']*)' has invalid keys: (.+)`)
	badValueRe    = regexp.MustCompile(`'([^']+)' (.+)`)
)

// decodeError turns mapstructure's message into "file: key: reason".
func decodeError(file string, err error) error {
	msg := err.Error()
	if m := unknownKeysRe.FindStringSubmatch(msg); m != nil {
		var keys []string
		for _, k := range strings.Split(m[2], ",") {
			k = strings.TrimSpace(k)
			if m[1] != "" {
				k = m[1] + "." + k
			}
			keys = append(keys, k)
		}
		return &LoadError{File: file, Key: keys[0], Err: fmt.Errorf("unknown key (unknown: %s)", strings.Join(keys, ", "))}
	}
	for _, line := range strings.Split(msg, "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "*"))
		if m := badValueRe.FindStringSubmatch(line); m != nil && m[1] != "" {
			return &LoadError{File: file, Key: m[1], Err: errors.New("bad value: " + m[2])}
		}
	}
	return &LoadError{File: file, Err: err}
}

// strictHook refuses a fractional number for an integer key (1.5 for a port would
// otherwise be truncated in silence) and reads YAML booleans as on/off for string keys
// such as capture.ipv6.
func strictHook(from, to reflect.Type, data any) (any, error) {
	switch {
	case from.Kind() == reflect.Float64 && to.Kind() == reflect.Int:
		f := data.(float64)
		if f != math.Trunc(f) {
			return nil, fmt.Errorf("%v is not a whole number", f)
		}
		return int(f), nil
	case from.Kind() == reflect.Bool && to.Kind() == reflect.String:
		if data.(bool) {
			return "on", nil
		}
		return "off", nil
	}
	return data, nil
}
