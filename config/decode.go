package config

import (
	"fmt"
	"math/big"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// Problem is one thing wrong with a config file, with the place it was found.
type Problem struct {
	Range hcl.Range
	Msg   string
}

// String formats the problem as FILE:LINE,COL: message.
func (p Problem) String() string {
	return fmt.Sprintf("%s:%d,%d: %s", p.Range.Filename, p.Range.Start.Line, p.Range.Start.Column, p.Msg)
}

// Problems is every problem found in one config file. It is the error returned by
// Parse and Load; callers print one problem a line.
type Problems []Problem

// Error joins all problems, one a line, in file order.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

func (ps *Problems) add(r hcl.Range, format string, args ...any) {
	*ps = append(*ps, Problem{Range: r, Msg: fmt.Sprintf(format, args...)})
}

func (ps *Problems) addDiags(diags hcl.Diagnostics) {
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		r := hcl.Range{}
		if d.Subject != nil {
			r = *d.Subject
		}
		msg := d.Summary
		if d.Summary == "Error in function call" && d.Detail != "" {
			msg = strings.TrimSuffix(d.Detail, ".")
		} else if d.Detail != "" {
			msg += ": " + strings.TrimSuffix(d.Detail, ".")
		}
		*ps = append(*ps, Problem{Range: r, Msg: msg})
	}
}

func (ps Problems) sorted() Problems {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i].Range.Start, ps[j].Range.Start
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return ps
}

// evalContext offers env("NAME") and env("NAME", "default") to config expressions.
// A variable that is unset and has no default is an error at the call.
func evalContext(lookup func(string) (string, bool)) *hcl.EvalContext {
	env := function.New(&function.Spec{
		Params:   []function.Parameter{{Name: "name", Type: cty.String}},
		VarParam: &function.Parameter{Name: "default", Type: cty.String},
		Type:     function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			if len(args) > 2 {
				return cty.NilVal, fmt.Errorf("env takes a name and an optional default")
			}
			name := args[0].AsString()
			if v, ok := lookup(name); ok {
				return cty.StringVal(v), nil
			}
			if len(args) == 2 {
				return args[1], nil
			}
			return cty.NilVal, fmt.Errorf("environment variable %s is not set", name)
		},
	})
	if lookup == nil {
		lookup = os.LookupEnv
	}
	return &hcl.EvalContext{Functions: map[string]function.Function{"env": env}}
}

// body walks one HCL body. Every attribute or block read through it is marked used;
// finish reports the rest as unknown, so a typo never passes silently.
type body struct {
	ps   *Problems
	ctx  *hcl.EvalContext
	b    *hclsyntax.Body
	what string // "route \"detail\"", for messages
	used map[string]bool
}

func newBody(ps *Problems, ctx *hcl.EvalContext, b *hclsyntax.Body, what string) *body {
	return &body{ps: ps, ctx: ctx, b: b, what: what, used: map[string]bool{}}
}

// value evaluates attribute name. ok is false when it is absent or failed to evaluate
// (the failure is recorded).
func (b *body) value(name string) (cty.Value, hcl.Range, bool) {
	b.used[name] = true
	a, found := b.b.Attributes[name]
	if !found {
		return cty.NilVal, hcl.Range{}, false
	}
	v, diags := a.Expr.Value(b.ctx)
	if diags.HasErrors() {
		b.ps.addDiags(diags)
		return cty.NilVal, a.Expr.Range(), false
	}
	if v.IsNull() {
		b.ps.add(a.Expr.Range(), "%s must not be null", name)
		return cty.NilVal, a.Expr.Range(), false
	}
	return v, a.Expr.Range(), true
}

// has reports whether attribute name is set.
func (b *body) has(name string) bool {
	_, ok := b.b.Attributes[name]
	return ok
}

func (b *body) rangeOf(name string) hcl.Range {
	if a, ok := b.b.Attributes[name]; ok {
		return a.Expr.Range()
	}
	return b.b.SrcRange
}

func (b *body) str(name string, dst *string) (hcl.Range, bool) {
	v, r, ok := b.value(name)
	if !ok {
		return r, false
	}
	if v.Type() != cty.String {
		b.ps.add(r, "%s must be a string", name)
		return r, false
	}
	*dst = v.AsString()
	return r, true
}

func (b *body) boolean(name string, dst *bool) {
	v, r, ok := b.value(name)
	if !ok {
		return
	}
	if v.Type() != cty.Bool {
		b.ps.add(r, "%s must be true or false", name)
		return
	}
	*dst = v.True()
}

func (b *body) integer(name string, dst *int, min int) {
	v, r, ok := b.value(name)
	if !ok {
		return
	}
	n, ok := toInt(v)
	if !ok {
		b.ps.add(r, "%s must be a whole number", name)
		return
	}
	if n < min {
		b.ps.add(r, "%s must be at least %d, got %d", name, min, n)
		return
	}
	*dst = n
}

func toInt(v cty.Value) (int, bool) {
	if v.Type() == cty.String {
		var err error
		if v, err = convertNumber(v.AsString()); err != nil {
			return 0, false
		}
	}
	if v.Type() != cty.Number {
		return 0, false
	}
	f := v.AsBigFloat()
	if !f.IsInt() {
		return 0, false
	}
	i, acc := f.Int64()
	if acc != big.Exact || i > 1<<40 || i < -(1<<40) {
		return 0, false
	}
	return int(i), true
}

func convertNumber(s string) (cty.Value, error) {
	f, _, err := big.ParseFloat(strings.TrimSpace(s), 10, 64, big.ToNearestEven)
	if err != nil {
		return cty.NilVal, err
	}
	return cty.NumberVal(f), nil
}

func (b *body) strList(name string, dst *[]string) ([]hcl.Range, bool) {
	v, r, ok := b.value(name)
	if !ok {
		return nil, false
	}
	if !v.Type().IsListType() && !v.Type().IsTupleType() {
		b.ps.add(r, "%s must be a list of strings", name)
		return nil, false
	}
	ranges := elemRanges(b.b.Attributes[name].Expr, v.LengthInt(), r)
	out := make([]string, 0, v.LengthInt())
	i := 0
	for it := v.ElementIterator(); it.Next(); i++ {
		_, e := it.Element()
		if e.IsNull() || e.Type() != cty.String {
			b.ps.add(ranges[i], "%s[%d] must be a string", name, i)
			return nil, false
		}
		out = append(out, e.AsString())
	}
	*dst = out
	return ranges, true
}

// elemRanges returns the source range of each element of a list literal, or r for
// each when the expression is not a literal.
func elemRanges(e hclsyntax.Expression, n int, r hcl.Range) []hcl.Range {
	out := make([]hcl.Range, n)
	tup, ok := e.(*hclsyntax.TupleConsExpr)
	for i := range out {
		out[i] = r
		if ok && i < len(tup.Exprs) {
			out[i] = tup.Exprs[i].Range()
		}
	}
	return out
}

// strMap reads an object of string values, e.g. query = { day = "today" }.
func (b *body) strMap(name string, dst *map[string]string) {
	v, r, ok := b.value(name)
	if !ok {
		return
	}
	if !v.Type().IsObjectType() && !v.Type().IsMapType() {
		b.ps.add(r, "%s must be an object of strings, like { name = \"value\" }", name)
		return
	}
	out := map[string]string{}
	for it := v.ElementIterator(); it.Next(); {
		k, e := it.Element()
		if e.IsNull() || e.Type() != cty.String {
			b.ps.add(r, "%s.%s must be a string", name, k.AsString())
			return
		}
		out[k.AsString()] = e.AsString()
	}
	*dst = out
}

func (b *body) duration(name string, dst *time.Duration) {
	v, r, ok := b.value(name)
	if !ok {
		return
	}
	s := ""
	if v.Type() == cty.String {
		s = v.AsString()
	}
	d, err := time.ParseDuration(s)
	if v.Type() != cty.String {
		b.ps.add(r, "%s must be a duration string like \"5s\"", name)
		return
	}
	if err != nil || d <= 0 {
		b.ps.add(r, "%s: %q is not a positive duration like \"250ms\" or \"5s\"", name, s)
		return
	}
	*dst = d
}

func (b *body) size(name string, dst *int64) {
	v, r, ok := b.value(name)
	if !ok {
		return
	}
	var n int64
	var err error
	switch v.Type() {
	case cty.String:
		n, err = ParseSize(v.AsString())
	case cty.Number:
		var i int
		if i, ok = toInt(v); !ok || i <= 0 {
			err = fmt.Errorf("must be a positive whole number of bytes")
		}
		n = int64(i)
	default:
		err = fmt.Errorf("must be a size like \"16KB\" or \"8MB\"")
	}
	if err != nil {
		b.ps.add(r, "%s: %v", name, err)
		return
	}
	*dst = n
}

// oneOf reads a string that must be one of the given words.
func (b *body) oneOf(name string, dst *string, words ...string) {
	var s string
	r, ok := b.str(name, &s)
	if !ok {
		return
	}
	for _, w := range words {
		if s == w {
			*dst = s
			return
		}
	}
	b.ps.add(r, "%s must be one of %s, got %q", name, quoteList(words), s)
}

func quoteList(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = fmt.Sprintf("%q", w)
	}
	return strings.Join(q, ", ")
}

// blocks returns the nested blocks of type typ, checking their label count.
func (b *body) blocks(typ string, labels int) []*hclsyntax.Block {
	b.used[typ] = true
	var out []*hclsyntax.Block
	for _, blk := range b.b.Blocks {
		if blk.Type != typ {
			continue
		}
		if len(blk.Labels) != labels {
			if labels == 0 {
				b.ps.add(blk.DefRange(), "block %s takes no label", typ)
			} else {
				b.ps.add(blk.DefRange(), "block %s needs a name: %s \"name\" { … }", typ, typ)
			}
			continue
		}
		out = append(out, blk)
	}
	return out
}

// block returns the single block of type typ, or nil; a repeated block is a problem.
func (b *body) block(typ string) *hclsyntax.Block {
	bs := b.blocks(typ, 0)
	if len(bs) == 0 {
		return nil
	}
	for _, extra := range bs[1:] {
		b.ps.add(extra.DefRange(), "duplicate %s block; the first is at line %d", typ, bs[0].DefRange().Start.Line)
	}
	return bs[0]
}

func (b *body) child(blk *hclsyntax.Block, what string) *body {
	return newBody(b.ps, b.ctx, blk.Body, what)
}

// finish reports attributes and blocks that no reader asked for.
func (b *body) finish() {
	for name, a := range b.b.Attributes {
		if !b.used[name] {
			b.ps.add(a.NameRange, "unknown attribute %q in %s", name, b.what)
		}
	}
	for _, blk := range b.b.Blocks {
		if !b.used[blk.Type] {
			b.ps.add(blk.TypeRange, "unknown block %q in %s", blk.Type, b.what)
		}
	}
}
