// Starts testdata/apps/http.js unless the file CRASH_FILE exists, in which
// case it fails at start-up the way a bad release does.
const fs = require('fs');
if (process.env.CRASH_FILE && fs.existsSync(process.env.CRASH_FILE)) {
  console.error('crash-if: bad release, exiting');
  process.exit(1);
}
require('./http.js');
