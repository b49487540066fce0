// Go engine of Code Actions, compiled together with the user's action.go into one binary.
//
// Protocol (spoken by the runner supervisor):
//
//	stdin  <- one JSON line {run_id, code_id, params, headers, method, secrets, max_log_chars, body_size},
//	          then body_size raw bytes: the body
//	fd 3   -> JSON lines {"t":"log",...} | {"t":"result",...} | {"t":"error","kind":"exception",...}
//	stdout/stderr are left alone: the supervisor keeps them as info/error logs.
//	Exit 0 after Run returns, 1 after a panic.
//
// The user's file defines `func Run(engine *Engine)`. Everything here except Engine is unexported
// and prefixed ca_ so it does not clash with what user code declares in the same package.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"
)

// Engine is what Run receives: the request and the ways to answer it.
type Engine struct {
	Params  *ca_Params
	Header  *ca_Header
	Body    string
	Method  string
	Log     *ca_Log
	Result  *ca_Result
	Request *ca_Request
	Secrets *ca_Secrets
}

// ca_Request mirrors the Python engine's engine.request.
type ca_Request struct {
	Params *ca_Params
	Header *ca_Header
	Body   string
	Method string
	Log    *ca_Log
}

type ca_Params struct{ values map[string]string }

// Get returns the query parameter, "" when absent.
func (p *ca_Params) Get(name string) string { return p.values[name] }

// Lookup tells an absent parameter from an empty one.
func (p *ca_Params) Lookup(name string) (string, bool) {
	value, ok := p.values[name]
	return value, ok
}

// Items returns a copy of all parameters.
func (p *ca_Params) Items() map[string]string {
	items := make(map[string]string, len(p.values))
	for k, v := range p.values {
		items[k] = v
	}
	return items
}

// ca_Secrets holds the project's secrets for this run.
type ca_Secrets struct{ values map[string]string }

// Get returns the secret's value, "" when absent.
func (s *ca_Secrets) Get(name string) string { return s.values[name] }

// Has tells whether the project has a secret of that name.
func (s *ca_Secrets) Has(name string) bool {
	_, ok := s.values[name]
	return ok
}

// Keys returns the secrets' names (not their values), sorted.
func (s *ca_Secrets) Keys() []string {
	names := make([]string, 0, len(s.values))
	for name := range s.values {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

type ca_Header struct{ values map[string][]string }

// Get returns the first value of a header by its canonical name ("Content-Type"), "" when absent.
func (h *ca_Header) Get(name string) string {
	if values := h.values[name]; len(values) > 0 {
		return values[0]
	}
	return ""
}

// Values returns every value of a header.
func (h *ca_Header) Values(name string) []string {
	return append([]string(nil), h.values[name]...)
}

// Items returns a copy of all headers.
func (h *ca_Header) Items() map[string][]string {
	items := make(map[string][]string, len(h.values))
	for k, v := range h.values {
		items[k] = append([]string(nil), v...)
	}
	return items
}

type ca_Log struct {
	events   *ca_Events
	maxChars int
}

// Debug, Info and Error write a run log line; non-strings are formatted with fmt.Sprint.
func (l *ca_Log) Debug(msg any) { l.write("debug", msg) }
func (l *ca_Log) Info(msg any)  { l.write("info", msg) }
func (l *ca_Log) Error(msg any) { l.write("error", msg) }

func (l *ca_Log) write(level string, msg any) {
	text, ok := msg.(string)
	if !ok {
		text = fmt.Sprint(msg)
	}
	l.events.emit(map[string]any{"t": "log", "level": level, "msg": ca_truncate(text, l.maxChars)})
}

type ca_Result struct{ events *ca_Events }

// Set answers the run; the last call wins. Strings are sent as is, other values as JSON.
func (r *ca_Result) Set(value any, statusCode int, contentType string) {
	var text string
	switch v := value.(type) {
	case string:
		text = v
	case []byte:
		// Most often the output of the user's own json.Marshal: not base64 of it.
		text = string(v)
	default:
		// Like json.Marshal, without escaping <, > and & (the result is not embedded in HTML).
		var buffer bytes.Buffer
		encoder := json.NewEncoder(&buffer)
		encoder.SetEscapeHTML(false)
		if err := encoder.Encode(v); err != nil {
			text = fmt.Sprint(v)
		} else {
			text = strings.TrimSuffix(buffer.String(), "\n")
		}
	}
	r.events.emit(map[string]any{
		"t": "result", "value": text, "status_code": statusCode, "content_type": contentType,
	})
}

// ca_Events writes protocol lines on fd 3, one write per line so a kill loses nothing written.
type ca_Events struct {
	mu   sync.Mutex
	file *os.File
}

func (e *ca_Events) emit(event map[string]any) {
	data, err := json.Marshal(event)
	if err != nil {
		return
	}
	data = append(data, '\n')
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, err := e.file.Write(data); err != nil {
		// No event channel: stderr still reaches the supervisor.
		os.Stderr.Write(data)
	}
}

type ca_RunRequest struct {
	RunID       string              `json:"run_id"`
	CodeID      string              `json:"code_id"`
	Params      map[string]string   `json:"params"`
	BodySize    int                 `json:"body_size"`
	Headers     map[string][]string `json:"headers"`
	Method      string              `json:"method"`
	Secrets     map[string]string   `json:"secrets"`
	MaxLogChars *int                `json:"max_log_chars"`
}

// ca_truncate keeps at most limit characters (runes, as Python counts them).
func ca_truncate(text string, limit int) string {
	if limit < 0 || utf8.RuneCountInString(text) <= limit {
		return text
	}
	count := 0
	for i := range text {
		if count == limit {
			return text[:i]
		}
		count++
	}
	return text
}

// ca_pyStrip strips what Python's str.strip() strips, so bodies read the same in every language.
func ca_pyStrip(text string) string {
	return strings.TrimFunc(text, func(r rune) bool {
		switch {
		case r >= '\t' && r <= '\r', r >= 0x1c && r <= 0x20, r == 0x85, r == 0xa0, r == 0x1680,
			r >= 0x2000 && r <= 0x200a, r == 0x2028, r == 0x2029, r == 0x202f, r == 0x205f, r == 0x3000:
			return true
		}
		return false
	})
}

// ca_panicMessage gives the panic value and the stack from the user's code down.
func ca_panicMessage(value any) string {
	lines := strings.Split(string(debug.Stack()), "\n")
	// The stack starts with debug.Stack, this function and the runtime's panic machinery:
	// keep the goroutine line, then drop frames up to and including runtime's panic call.
	kept := []string{}
	if len(lines) > 0 {
		kept = append(kept, lines[0])
	}
	body := lines[1:]
	for i := 0; i+1 < len(body); i += 2 {
		if strings.HasPrefix(body[i], "panic(") {
			body = body[i+2:]
			break
		}
	}
	for i := 0; i+1 < len(body); i += 2 {
		// Frames below Run belong to the engine's main.
		if strings.HasPrefix(body[i], "main.ca_") || strings.HasPrefix(body[i], "main.main(") {
			break
		}
		kept = append(kept, body[i], strings.Replace(body[i+1], "\t"+ca_modulePrefix, "\t", 1))
	}
	return fmt.Sprintf("panic: %v\n\n%s", value, strings.TrimRight(strings.Join(kept, "\n"), "\n"))
}

// ca_modulePrefix is how -trimpath names files of the generated module "action".
const ca_modulePrefix = "action/"

func ca_call(engine *Engine, events *ca_Events) (ok bool) {
	defer func() {
		if value := recover(); value != nil {
			events.emit(map[string]any{"t": "error", "kind": "exception", "message": ca_panicMessage(value)})
			ok = false
		}
	}()
	Run(engine)
	return true
}

func main() {
	events := &ca_Events{file: os.NewFile(3, "ca_events")}
	stdin := bufio.NewReaderSize(os.Stdin, 1<<16)
	line, err := stdin.ReadBytes('\n')
	if err != nil && err != io.EOF {
		events.emit(map[string]any{"t": "error", "kind": "runner", "message": "reading the request: " + err.Error()})
		os.Exit(1)
	}
	var request ca_RunRequest
	if err := json.Unmarshal(line, &request); err != nil {
		events.emit(map[string]any{"t": "error", "kind": "runner", "message": "bad request: " + err.Error()})
		os.Exit(1)
	}
	if request.BodySize < 0 {
		request.BodySize = 0
	}
	rawBody := make([]byte, request.BodySize)
	if _, err := io.ReadFull(stdin, rawBody); err != nil {
		events.emit(map[string]any{"t": "error", "kind": "runner", "message": "reading the request body: " + err.Error()})
		os.Exit(1)
	}
	maxChars := 8000
	if request.MaxLogChars != nil {
		maxChars = *request.MaxLogChars
	}
	if request.Params == nil {
		request.Params = map[string]string{}
	}
	if request.Headers == nil {
		request.Headers = map[string][]string{}
	}
	if request.Secrets == nil {
		request.Secrets = map[string]string{}
	}
	params := &ca_Params{values: request.Params}
	header := &ca_Header{values: request.Headers}
	log := &ca_Log{events: events, maxChars: maxChars}
	// Invalid UTF-8 reads as U+FFFD, as in the other engines.
	body := ca_pyStrip(strings.ToValidUTF8(string(rawBody), "\uFFFD"))
	engine := &Engine{
		Params: params, Header: header, Body: body, Method: request.Method, Log: log,
		Result:  &ca_Result{events: events},
		Request: &ca_Request{Params: params, Header: header, Body: body, Method: request.Method, Log: log},
		Secrets: &ca_Secrets{values: request.Secrets},
	}
	if !ca_call(engine, events) {
		os.Exit(1)
	}
	os.Exit(0)
}
