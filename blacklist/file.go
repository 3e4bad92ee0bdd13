package blacklist

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
)

// maxLine bounds one line of a list file; longer lines are reported and skipped.
const maxLine = 4096

// ParseList reads a list file's content from r: one entry a line (see ParseLine).
// name is used in the problems, each "NAME:LINE: message"; bad lines are skipped and
// the good ones kept. err is non-nil only when r fails.
func ParseList(r io.Reader, name string) (entries []Entry, problems []error, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	lineNo := 0
	for {
		line, rerr := br.ReadSlice('\n')
		tooLong := false
		if rerr == bufio.ErrBufferFull {
			// Skip the rest of an overlong line.
			tooLong = true
			for rerr == bufio.ErrBufferFull {
				_, rerr = br.ReadSlice('\n')
			}
		}
		if len(line) > 0 || rerr == nil {
			lineNo++
			line = bytes.TrimRight(line, "\r\n")
			switch {
			case tooLong || len(line) > maxLine:
				problems = append(problems, fmt.Errorf("%s:%d: line longer than %d bytes", name, lineNo, maxLine))
			default:
				e, ok, perr := ParseLine(string(line))
				if perr != nil {
					problems = append(problems, fmt.Errorf("%s:%d: %w", name, lineNo, perr))
				} else if ok {
					entries = append(entries, e)
				}
			}
		}
		if rerr == io.EOF {
			return entries, problems, nil
		}
		if rerr != nil {
			return nil, nil, fmt.Errorf("cannot read blacklist file %q: %w", name, rerr)
		}
	}
}

// ReadList reads and parses the list file at path; see ParseList.
func ReadList(path string) (entries []Entry, problems []error, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot open blacklist file: %w", err)
	}
	defer f.Close()
	return ParseList(f, path)
}
