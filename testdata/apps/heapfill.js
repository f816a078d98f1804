// Fills the V8 heap with live objects until V8 gives up at its heap limit
// ("JavaScript heap out of memory"), for testdata/heap-budget.sh.
const v8 = require('v8');
console.log(JSON.stringify({ node: process.version, heap_size_limit: v8.getHeapStatistics().heap_size_limit }));
const keep = [];
let i = 0;
for (;;) {
  const a = new Array(1024);
  for (let j = 0; j < a.length; j++) a[j] = { i: i++, s: 'x' + i };
  keep.push(a);
}
