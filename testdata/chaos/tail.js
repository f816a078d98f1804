// Writes a line without its newline, then idles: the last output of a
// worker that is stopped before it ends the line (docs/reliability.md).
process.stdout.write('tail without newline');
setInterval(() => {}, 60000);
