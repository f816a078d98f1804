package config

import (
	"os"
	"strconv"
	"strings"
)

// passwdPath is where user names are resolved. It is read directly rather
// than through os/user so that the static, cgo-free binary gives the same
// answer as the image's own tools, without NSS.
const passwdPath = "/etc/passwd"

// maxID is the largest usable uid or gid: (uid_t)-1 means "unchanged" to
// setuid(2) and friends, so it can never name a real user.
const maxID = 1<<32 - 2

// User is CLUSTERINIT_USER: the identity the workers run as. The zero value
// (Set false) means the workers keep clusterinit's own identity.
type User struct {
	Set bool `env:"-"`
	// Name is the user name when the variable gave one; empty for the
	// numeric forms, which print back as uid:gid.
	Name string `env:"-"`
	UID  uint32 `env:"-"`
	GID  uint32 `env:"-"`
}

// UnmarshalText resolves a name, uid or uid:gid against /etc/passwd.
func (u *User) UnmarshalText(text []byte) error {
	v, err := parseUser(string(text), passwdPath)
	if err != nil {
		return err
	}
	*u = v
	return nil
}

// MarshalText gives the same text as String.
func (u User) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// String is empty when unset, the name when one was given, and uid:gid
// otherwise, so that it parses back to the same User.
func (u User) String() string {
	switch {
	case !u.Set:
		return ""
	case u.Name != "":
		return u.Name
	}
	return strconv.FormatUint(uint64(u.UID), 10) + ":" + strconv.FormatUint(uint64(u.GID), 10)
}

// parseUser understands the three forms of CLUSTERINIT_USER:
//
//   - uid:gid is taken as it is; no passwd entry is needed, which is what
//     lets it work in images built FROM scratch.
//   - uid takes its group from the passwd entry for that uid, like
//     Docker's USER does, or the same number when there is none.
//   - name must have a passwd entry.
func parseUser(s, passwd string) (User, error) {
	if s == "" {
		return User{}, nil
	}
	if uidText, gidText, ok := strings.Cut(s, ":"); ok {
		uid, okUID := parseDecimal(uidText, maxID)
		gid, okGID := parseDecimal(gidText, maxID)
		if !okUID || !okGID {
			return User{}, want(wantUser)
		}
		return User{Set: true, UID: uint32(uid), GID: uint32(gid)}, nil
	}
	if uid, ok := parseDecimal(s, maxID); ok {
		u := User{Set: true, UID: uint32(uid), GID: uint32(uid)}
		// An unreadable passwd file is not a problem for a numeric uid.
		if entries, err := readPasswd(passwd); err == nil {
			for _, e := range entries {
				if e.uid == u.UID {
					u.GID = e.gid
					break
				}
			}
		}
		return u, nil
	}
	if strings.TrimLeft(s, "0123456789") == "" || !validUserName(s) {
		return User{}, want(wantUser)
	}
	entries, err := readPasswd(passwd)
	if err != nil {
		return User{}, wantf("%s (cannot read %s)", wantUser, passwd)
	}
	for _, e := range entries {
		if e.name == s {
			return User{Set: true, Name: s, UID: e.uid, GID: e.gid}, nil
		}
	}
	return User{}, wantf("%s (no user %q in %s)", wantUser, s, passwd)
}

// validUserName accepts the portable user-name characters plus the
// trailing $ of machine accounts; anything else cannot be in passwd anyway
// and would only make the problem line harder to read.
func validUserName(s string) bool {
	if s == "" || len(s) > 256 || s[0] == '-' {
		return false
	}
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '.' || c == '-' || c == '$' && i == len(s)-1
		if !ok {
			return false
		}
	}
	return true
}

// passwdEntry is the part of a passwd line clusterinit needs.
type passwdEntry struct {
	name     string
	uid, gid uint32
}

// readPasswd parses a passwd(5) file. Lines it cannot use (comments, NIS
// "+"/"-" entries, malformed ids) are skipped, as the C library does,
// rather than making every lookup fail.
func readPasswd(path string) ([]passwdEntry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var entries []passwdEntry
	for line := range strings.SplitSeq(string(data), "\n") {
		if line == "" || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) < 4 || fields[0] == "" {
			continue
		}
		uid, okUID := parseDecimal(fields[2], maxID)
		gid, okGID := parseDecimal(fields[3], maxID)
		if !okUID || !okGID {
			continue
		}
		entries = append(entries, passwdEntry{name: fields[0], uid: uint32(uid), gid: uint32(gid)})
	}
	return entries, nil
}
