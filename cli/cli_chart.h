/* cli_chart.h — loss curves as text for `splitchain watch`: up to two
 * series (train, eval) drawn in a fixed box of character cells, with
 * Unicode braille (U+2800..U+28FF, 2 x 4 dots a cell) or plain ASCII.
 * Private to cli/.
 *
 * The box is exactly `rows` lines of exactly `cols` display columns
 * (padded with spaces; each line ends with '\n', the last one included),
 * so a caller can lay it beside other text:
 *
 *     1.5┤⠉⠢⢄⡀             <- the largest y (%.3g) on the top row
 *        │   ⠈⠑⠢⢄⣀         <- plot rows (rows - 2 of them)
 *    0.25┤        ⠉⠒⠒⠤⠤   <- the smallest y on the bottom row
 *        └0           90   <- the first and the last step
 *    ⠒⠒ train  ⠂⠂ eval      <- the legend
 *
 * x spans the smallest to the largest step of both series, y their
 * smallest to largest value; points whose x or y is NaN or infinite are
 * skipped (the line joins the points either side). Each series is drawn as
 * segments joining its points in array order, so where there are more
 * points than dot columns, each dot column shows the span (min to max) of
 * the points that fall in it: a spike is never averaged away. All y equal:
 * a flat line in the middle, labelled with that value; all x equal: the
 * points in the middle column. No finite point at all: a framed box saying
 * "no data yet".
 *
 * Telling the series apart: with colour > 0, ANSI colours (series 1 cyan,
 * series 2 yellow; a cell holding both takes series 2's); with colour == 0,
 * series 2's segments are dotted (every other dot; its points always
 * drawn). CLI_CHART_ASCII draws one character a cell, no colour: '*' for
 * series 1, 'o' for series 2's points and '.' for the segments joining
 * them (for terminals without UTF-8: the caller decides, e.g. from LANG).
 * A legend label's code points count one column each; control characters
 * and bytes that are not UTF-8 print as '?'. Output is always valid UTF-8.
 */
#ifndef SC_CLI_CHART_H
#define SC_CLI_CHART_H

#include <stddef.h>

typedef struct cli_series {
	const double *x, *y; /* (n) steps and values, borrowed for the call */
	size_t n;
	const char *label; /* legend text, borrowed; NULL: "series 1" / "series 2" */
} cli_series;

/* cols and rows are clamped to these (the box never gets smaller) ... */
#define CLI_CHART_MIN_COLS 20
#define CLI_CHART_MIN_ROWS 4
/* ... and to these (a bound on memory). */
#define CLI_CHART_MAX_COLS 1024
#define CLI_CHART_MAX_ROWS 256

/* The colour argument: > 0 ANSI colours, 0 monochrome braille, this ASCII. */
#define CLI_CHART_ASCII (-1)

/* Renders the ns (0..2) series of s (borrowed for the call; NULL when ns is
 * 0) as described above. Returns new text, free with free(); NULL when ns
 * is out of range, a series with n > 0 has no x or y, or out of memory. */
char *cli_chart_render(const cli_series *s, int ns, int cols, int rows, int colour);

#endif
