// Package config turns clusterinit's environment into a checked Config.
//
// The model is deliberately flat: every CLUSTERINIT_* variable of the user
// contract is exactly one field of Config, and the field's struct tags carry
// the variable's name (env), its default (envDefault) and its one-line meaning
// (help). Parsing, the help screen (WriteHelp, Variables) and the effective
// configuration printout (Config.Write) are all derived from those tags, so
// the three can never disagree with one another or drift from the code.
//
// Parsing is done by github.com/caarlos0/env into typed fields. Each value
// type here (Workers, Size, Signal, …) implements encoding.TextUnmarshaler,
// which the library prefers over its own parsers, so the rules for a value
// live next to its type and can be tested and fuzzed on their own.
//
// Load never stops at the first mistake. An operator who fixes one typo, then
// redeploys, only to learn about the next one wastes a deployment each time;
// so Load collects every problem (invalid values, values outside their range,
// unknown CLUSTERINIT_* names that are probably typos, an unusable PORT) and
// returns them together as an *Error, one line per problem, each naming the
// variable, its value and what would have been accepted. The caller starts
// nothing when there is any problem.
//
// Surrounding whitespace in a value is ignored and an empty value means the
// default, because both are easy to produce by accident in task definitions
// and .env files and neither can mean anything else.
package config
