package fhirpath

import "strings"

// astKind is the kind of a syntax tree node.
type astKind uint8

const (
	aString  astKind = iota + 1 // 'text'
	aNumber                     // 12 or 1.5
	aBool                       // true, false
	aEmpty                      // {}
	aDate                       // @2019-01-01
	aMember                     // name, left.name
	aFunc                       // name(args), left.name(args)
	aSpecial                    // $this, $index, $total
	aEnv                        // %resource
	aIndex                      // left[arg]
	aBinary                     // args[0] op args[1]
	aUnary                      // op args[0]
	aType                       // left is/as Type
	aParen                      // (args[0])
)

// ast is a node of the parsed expression.
type ast struct {
	kind astKind
	pos  int    // byte offset where the node's text starts (its operator for binaries)
	name string // member, function, operator, literal text, variable or type name
	left *ast   // the expression before '.', '[', 'is' or 'as'; nil for a term at the root
	args []*ast
}

// binding powers of the infix operators, from the FHIRPath grammar's
// precedence table (higher binds tighter).
func infixPower(t token) int {
	switch t.kind {
	case tokOp:
		switch t.text {
		case ".", "[":
			return 120
		case "*", "/":
			return 100
		case "+", "-", "&":
			return 90
		case "|":
			return 70
		case "<", ">", "<=", ">=":
			return 60
		case "=", "~", "!=", "!~":
			return 50
		}
	case tokIdent:
		if t.delimited {
			return 0
		}
		switch t.text {
		case "div", "mod":
			return 100
		case "is", "as":
			return 80
		case "in", "contains":
			return 40
		case "and":
			return 30
		case "or", "xor":
			return 20
		case "implies":
			return 10
		}
	}
	return 0
}

const prefixPower = 110

type parser struct {
	expr string
	toks []token
	i    int
}

// parse parses a whole expression.
func parse(expr string) (*ast, error) {
	toks, err := lex(expr)
	if err != nil {
		return nil, err
	}
	p := &parser{expr: expr, toks: toks}
	if p.peek().kind == tokEOF {
		return nil, errAt(expr, 0, "empty expression")
	}
	n, err := p.expression(0)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tokEOF {
		return nil, errAt(expr, t.pos, "unexpected %s", describe(t))
	}
	return n, nil
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tokEOF {
		p.i++
	}
	return t
}

func (p *parser) isOp(text string) bool {
	t := p.peek()
	return t.kind == tokOp && t.text == text
}

func (p *parser) expect(text string) (token, error) {
	t := p.peek()
	if t.kind != tokOp || t.text != text {
		return t, errAt(p.expr, t.pos, "expected '%s' but found %s", text, describe(t))
	}
	return p.next(), nil
}

func describe(t token) string {
	switch t.kind {
	case tokEOF:
		return "the end of the expression"
	case tokString:
		return "string '" + t.text + "'"
	case tokOp:
		return "'" + t.text + "'"
	}
	return "'" + t.text + "'"
}

// expression parses operators binding tighter than minPower.
func (p *parser) expression(minPower int) (*ast, error) {
	left, err := p.term()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		pw := infixPower(t)
		if pw == 0 || pw <= minPower {
			return left, nil
		}
		p.next()
		switch {
		case t.kind == tokOp && t.text == ".":
			left, err = p.invocation(left)
		case t.kind == tokOp && t.text == "[":
			var idx *ast
			idx, err = p.expression(0)
			if err == nil {
				_, err = p.expect("]")
			}
			left = &ast{kind: aIndex, pos: t.pos, left: left, args: []*ast{idx}}
		case t.kind == tokIdent && (t.text == "is" || t.text == "as"):
			var name string
			name, err = p.typeSpecifier()
			left = &ast{kind: aType, pos: t.pos, name: t.text, left: left, args: []*ast{{kind: aMember, pos: t.pos, name: name}}}
		default:
			var right *ast
			right, err = p.expression(pw)
			left = &ast{kind: aBinary, pos: t.pos, name: t.text, args: []*ast{left, right}}
		}
		if err != nil {
			return nil, err
		}
	}
}

// typeSpecifier parses a (possibly qualified) type name.
func (p *parser) typeSpecifier() (string, error) {
	t := p.next()
	if t.kind != tokIdent {
		return "", errAt(p.expr, t.pos, "expected a type name but found %s", describe(t))
	}
	name := t.text
	for p.isOp(".") && p.toks[p.i+1].kind == tokIdent {
		p.next()
		name += "." + p.next().text
	}
	return name, nil
}

// invocation parses what follows a '.': a member name or a function call.
func (p *parser) invocation(left *ast) (*ast, error) {
	t := p.next()
	if t.kind != tokIdent {
		return nil, errAt(p.expr, t.pos, "expected a name after '.' but found %s", describe(t))
	}
	if p.isOp("(") && !t.delimited {
		return p.call(t, left)
	}
	return &ast{kind: aMember, pos: t.pos, name: t.text, left: left}, nil
}

// call parses the argument list of the function named by t.
func (p *parser) call(t token, left *ast) (*ast, error) {
	p.next() // (
	n := &ast{kind: aFunc, pos: t.pos, name: t.text, left: left}
	if p.isOp(")") {
		p.next()
		return n, nil
	}
	for {
		a, err := p.expression(0)
		if err != nil {
			return nil, err
		}
		n.args = append(n.args, a)
		if p.isOp(",") {
			p.next()
			continue
		}
		if _, err := p.expect(")"); err != nil {
			return nil, err
		}
		return n, nil
	}
}

// term parses a literal, a root invocation, a variable or a parenthesised
// expression, with any prefix sign.
func (p *parser) term() (*ast, error) {
	t := p.next()
	switch t.kind {
	case tokEOF:
		return nil, errAt(p.expr, t.pos, "unexpected end of the expression")
	case tokString:
		return &ast{kind: aString, pos: t.pos, name: t.text}, nil
	case tokNumber:
		return &ast{kind: aNumber, pos: t.pos, name: t.text}, nil
	case tokDate:
		return &ast{kind: aDate, pos: t.pos, name: t.text}, nil
	case tokEnv:
		return &ast{kind: aEnv, pos: t.pos, name: t.text}, nil
	case tokSpecial:
		return &ast{kind: aSpecial, pos: t.pos, name: t.text}, nil
	case tokIdent:
		if !t.delimited && (t.text == "true" || t.text == "false") {
			return &ast{kind: aBool, pos: t.pos, name: t.text}, nil
		}
		if p.isOp("(") && !t.delimited {
			return p.call(t, nil)
		}
		return &ast{kind: aMember, pos: t.pos, name: t.text}, nil
	case tokOp:
		switch t.text {
		case "(":
			inner, err := p.expression(0)
			if err != nil {
				return nil, err
			}
			if _, err := p.expect(")"); err != nil {
				return nil, err
			}
			return &ast{kind: aParen, pos: t.pos, args: []*ast{inner}}, nil
		case "{":
			if _, err := p.expect("}"); err != nil {
				return nil, err
			}
			return &ast{kind: aEmpty, pos: t.pos}, nil
		case "+", "-":
			operand, err := p.expression(prefixPower)
			if err != nil {
				return nil, err
			}
			return &ast{kind: aUnary, pos: t.pos, name: t.text, args: []*ast{operand}}, nil
		}
	}
	return nil, errAt(p.expr, t.pos, "unexpected %s", describe(t))
}

// String renders the tree in a canonical, fully parenthesised form; tests
// use it to check the parser's precedence and associativity.
func (n *ast) String() string {
	var b strings.Builder
	n.write(&b)
	return b.String()
}

func (n *ast) write(b *strings.Builder) {
	switch n.kind {
	case aString:
		b.WriteString("'" + n.name + "'")
	case aNumber, aBool, aSpecial:
		b.WriteString(n.name)
	case aDate:
		b.WriteString("@" + n.name)
	case aEmpty:
		b.WriteString("{}")
	case aEnv:
		b.WriteString("%" + n.name)
	case aMember, aFunc:
		if n.left != nil {
			n.left.write(b)
			b.WriteByte('.')
		}
		b.WriteString(n.name)
		if n.kind == aFunc {
			b.WriteByte('(')
			for i, a := range n.args {
				if i > 0 {
					b.WriteString(", ")
				}
				a.write(b)
			}
			b.WriteByte(')')
		}
	case aIndex:
		n.left.write(b)
		b.WriteByte('[')
		n.args[0].write(b)
		b.WriteByte(']')
	case aBinary:
		b.WriteByte('(')
		n.args[0].write(b)
		b.WriteString(" " + n.name + " ")
		n.args[1].write(b)
		b.WriteByte(')')
	case aUnary:
		b.WriteString("(" + n.name)
		n.args[0].write(b)
		b.WriteByte(')')
	case aType:
		b.WriteByte('(')
		n.left.write(b)
		b.WriteString(" " + n.name + " " + n.args[0].name + ")")
	case aParen:
		n.args[0].write(b)
	}
}
