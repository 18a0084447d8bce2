/* cli_chart_test.c — the loss chart of `splitchain watch` (cli/cli_chart.c):
 * exact output of a small chart, where single points land, skipped NaN and
 * infinite points, the empty and flat cases, two series told apart with and
 * without colour, clamped sizes, and that every output is valid UTF-8 of
 * exactly rows lines of cols columns. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "../cli/cli_chart.h"

/* The code point at s (advancing *s), skipping ANSI escapes; -1 on bytes
 * that are not UTF-8, 0 at the end. */
static long next_cp(const char **s)
{
	const unsigned char *u = (const unsigned char *)*s;
	while (u[0] == 0x1b && u[1] == '[') {
		u += 2;
		while (*u && !(*u >= 0x40 && *u <= 0x7e))
			u++;
		if (*u)
			u++;
	}
	if (!*u) {
		*s = (const char *)u;
		return 0;
	}
	int k = u[0] < 0x80         ? 1
		: (u[0] >> 5) == 6  ? 2
		: (u[0] >> 4) == 14 ? 3
		: (u[0] >> 3) == 30 ? 4
				    : 0;
	if (!k)
		return -1;
	long cp = k == 1 ? u[0] : u[0] & (0x7f >> k);
	for (int i = 1; i < k; i++) {
		if ((u[i] & 0xC0) != 0x80)
			return -1;
		cp = cp << 6 | (u[i] & 0x3f);
	}
	static const long least[5] = { 0, 0, 0x80, 0x800, 0x10000 };
	if (cp < least[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return -1; /* overlong, too large, a surrogate */
	*s = (const char *)u + k;
	return cp;
}

/* Valid UTF-8, exactly rows lines each ending in '\n', each of cols code
 * points (escapes excluded), no control characters but '\n' and ESC. */
static void assert_shape(const char *t, int cols, int rows)
{
	assert_non_null(t);
	int lines = 0, w = 0;
	const char *p = t;
	long cp;
	while ((cp = next_cp(&p)) != 0) {
		if (cp < 0)
			fail_msg("not UTF-8 at byte %td of:\n%s", p - t, t);
		if (cp == '\n') {
			if (w != cols)
				fail_msg("line %d is %d columns, not %d:\n%s", lines, w, cols, t);
			lines++;
			w = 0;
			continue;
		}
		if (cp < 0x20 || cp == 0x7f)
			fail_msg("control character %ld in:\n%s", cp, t);
		w++;
	}
	assert_int_equal(w, 0); /* the last line ends with '\n' too */
	assert_int_equal(lines, rows);
}

static char *render_ok(const cli_series *s, int ns, int cols, int rows, int colour, int want_cols,
		       int want_rows)
{
	char *t = cli_chart_render(s, ns, cols, rows, colour);
	assert_shape(t, want_cols, want_rows);
	return t;
}

#define MAXDOT 256

/* The braille dots of the plot rows (the first rows - 2 lines, after the
 * axis character) into d[y][x]; returns how many are set. */
static int dots_of(const char *t, int rows, unsigned char d[][MAXDOT], int *dw)
{
	static const int dx[8] = { 0, 0, 0, 1, 1, 1, 0, 1 }, dy[8] = { 0, 1, 2, 0, 1, 2, 3, 3 };
	const char *p = t;
	int set = 0;
	memset(d, 0, (size_t)4 * (rows - 2) * MAXDOT);
	for (int r = 0; r < rows - 2; r++) {
		long cp;
		int axis = 0, c = 0;
		while ((cp = next_cp(&p)) != '\n') {
			assert_true(cp > 0);
			if (!axis) {
				axis = cp == 0x2524 || cp == 0x2502;
				continue;
			}
			if (cp >= 0x2800 && cp <= 0x28ff)
				for (int b = 0; b < 8; b++)
					if ((cp - 0x2800) >> b & 1) {
						d[r * 4 + dy[b]][c * 2 + dx[b]] = 1;
						set++;
					}
			c++;
		}
		*dw = 2 * c;
	}
	return set;
}

static const double X11[11] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };

/* A rising line in a 20 x 4 box, braille and ASCII, byte for byte. */
static void rising_line_exact(void **state)
{
	cli_series s = { X11, X11, 11, "train" };
	char *t = render_ok(&s, 1, 20, 4, 0, 20, 4);
	assert_string_equal(t, "10┤         ⢀⣀⠤⠔⠒⠒⠒⠉\n"
			       " 0┤⣀⠤⠤⠤⠔⠒⠉⠉⠉⠁       \n"
			       "  └0              10\n"
			       "⠒⠒ train            \n");
	free(t);
	t = render_ok(&s, 1, 20, 4, CLI_CHART_ASCII, 20, 4);
	assert_string_equal(t, "10|         ********\n"
			       " 0|*********        \n"
			       "  +0              10\n"
			       "* train             \n");
	free(t);
}

/* One point: the middle dot column, the middle dot row, labelled. Two
 * points: opposite corners of the dot grid. */
static void single_point_dots(void **state)
{
	unsigned char d[16][MAXDOT];
	int dw;
	double x = 5, y = 2;
	cli_series s = { &x, &y, 1, "train" };
	char *t = render_ok(&s, 1, 20, 4, 0, 20, 4);
	/* label "2" (1 column) + axis: 18 cells, 36 x 8 dots */
	assert_int_equal(dots_of(t, 4, d, &dw), 1);
	assert_int_equal(dw, 36);
	assert_int_equal(d[4][18], 1); /* round(0.5 * 35), round(0.5 * 7) */
	assert_non_null(strstr(t, "2┤"));
	assert_non_null(strstr(t, "5")); /* its step */
	free(t);

	double x2[2] = { 100, 200 }, y2[2] = { 0.5, 0.25 };
	cli_series s2 = { x2, y2, 2, NULL };
	t = render_ok(&s2, 1, 30, 6, 0, 30, 6);
	int n = dots_of(t, 6, d, &dw);
	assert_true(n >= 2);
	assert_int_equal(d[0][0], 1);           /* (100, 0.5): top left */
	assert_int_equal(d[15][dw - 1], 1);     /* (200, 0.25): bottom right */
	assert_non_null(strstr(t, "100"));      /* first step */
	assert_non_null(strstr(t, "200"));      /* last step */
	assert_non_null(strstr(t, "series 1")); /* no label */
	free(t);
}

/* NaN and infinite points are skipped: the chart is that of the others. */
static void nan_and_inf_skipped(void **state)
{
	double x[6] = { 0, 1, 2, 3, NAN, 5 }, y[6] = { 1, NAN, INFINITY, 2, 7, 3 };
	double xs[3] = { 0, 3, 5 }, ys[3] = { 1, 2, 3 };
	cli_series s = { x, y, 6, "train" }, clean = { xs, ys, 3, "train" };
	for (int colour = -1; colour <= 1; colour++) {
		char *a = render_ok(&s, 1, 24, 6, colour, 24, 6);
		char *b = render_ok(&clean, 1, 24, 6, colour, 24, 6);
		assert_string_equal(a, b);
		assert_null(strstr(a, "nan"));
		assert_null(strstr(a, "inf"));
		free(a);
		free(b);
	}
	/* nothing finite: the empty box */
	double bad[2] = { NAN, -INFINITY };
	cli_series none = { bad, bad, 2, "train" };
	char *t = render_ok(&none, 1, 20, 4, 0, 20, 4);
	assert_non_null(strstr(t, "no data yet"));
	free(t);
}

static void empty_box(void **state)
{
	cli_series s = { NULL, NULL, 0, "train" };
	char *t = render_ok(&s, 1, 20, 4, 0, 20, 4);
	assert_string_equal(t, "┌──────────────────┐\n"
			       "│   no data yet    │\n"
			       "│                  │\n"
			       "└──────────────────┘\n");
	free(t);
	t = render_ok(NULL, 0, 30, 5, CLI_CHART_ASCII, 30, 5);
	assert_string_equal(t, "+----------------------------+\n"
			       "|                            |\n"
			       "|        no data yet         |\n"
			       "|                            |\n"
			       "+----------------------------+\n");
	free(t);
	cli_series two[2] = { { NULL, NULL, 0, "train" }, { NULL, NULL, 0, "eval" } };
	t = render_ok(two, 2, 40, 8, 1, 40, 8);
	assert_non_null(strstr(t, "no data yet"));
	free(t);
}

/* All y equal: one dot row, in the middle, labelled with the value. */
static void flat_line(void **state)
{
	unsigned char d[16][MAXDOT];
	double y[11];
	int dw;
	for (int i = 0; i < 11; i++)
		y[i] = 2.5;
	cli_series s = { X11, y, 11, "train" };
	char *t = render_ok(&s, 1, 20, 5, 0, 20, 5);
	int n = dots_of(t, 5, d, &dw);
	assert_int_equal(n, dw); /* a full row ... */
	for (int x = 0; x < dw; x++)
		assert_int_equal(d[6][x], 1); /* ... the middle one: round(0.5 * 11) */
	assert_non_null(strstr(t, "2.5┤"));
	assert_null(strstr(strstr(t, "2.5") + 1, "2.5")); /* once */
	free(t);
}

/* Two series: colours with colour, dotted segments without, 'o' and '.'
 * in ASCII; the legend names both. */
static void two_series_distinguishable(void **state)
{
	unsigned char d[32][MAXDOT];
	int dw;
	double ty[11], ex[3] = { 0, 5, 10 }, ey[3] = { 0, 0, 0 };
	for (int i = 0; i < 11; i++)
		ty[i] = 1;
	cli_series s[2] = { { X11, ty, 11, "train" }, { ex, ey, 3, "eval" } };

	char *t = render_ok(s, 2, 30, 6, 1, 30, 6);
	assert_non_null(strstr(t, "\x1b[36m"));
	assert_non_null(strstr(t, "\x1b[33m"));
	assert_non_null(strstr(t, "train"));
	assert_non_null(strstr(t, "eval"));
	free(t);

	/* monochrome: train (top row) solid, eval (bottom row) every other dot */
	t = render_ok(s, 2, 30, 6, 0, 30, 6);
	assert_null(strchr(t, 0x1b));
	dots_of(t, 6, d, &dw);
	int top = 0, bottom = 0;
	for (int x = 0; x < dw; x++) {
		top += d[0][x];
		bottom += d[15][x];
	}
	assert_int_equal(top, dw);
	assert_true(bottom > 3 && bottom <= dw / 2 + 3);
	assert_int_equal(d[15][0] + d[15][dw / 2] + d[15][dw - 1], 3); /* its points */
	assert_non_null(strstr(t, "⠒⠒ train"));
	assert_non_null(strstr(t, "⠂⠂ eval"));
	free(t);

	t = render_ok(s, 2, 30, 6, CLI_CHART_ASCII, 30, 6);
	const char *last_plot = strstr(t, "0|"); /* the bottom row, labelled 0 */
	assert_non_null(last_plot);
	assert_true(last_plot[2] == 'o' && last_plot[3] == '.');
	assert_non_null(strstr(t, "|*****"));
	assert_non_null(strstr(t, "* train  o eval"));
	free(t);
}

/* Sizes below the minimum are clamped; values near the double range's ends
 * and subnormal ones still draw both ends. */
static void clamps_and_extremes(void **state)
{
	unsigned char d[16][MAXDOT];
	int dw;
	cli_series s = { X11, X11, 11, "train" };
	char *t = render_ok(&s, 1, 1, 1, 0, CLI_CHART_MIN_COLS, CLI_CHART_MIN_ROWS);
	free(t);
	t = render_ok(&s, 1, -5, 0, CLI_CHART_ASCII, CLI_CHART_MIN_COLS, CLI_CHART_MIN_ROWS);
	free(t);
	t = render_ok(&s, 1, 100000, 3, 1, CLI_CHART_MAX_COLS, CLI_CHART_MIN_ROWS);
	free(t);

	double hx[3] = { -1.7e308, 0, 1.7e308 }, hy[3] = { 1.7e308, -1.7e308, 0 };
	cli_series huge = { hx, hy, 3, "huge" };
	t = render_ok(&huge, 1, 40, 6, 0, 40, 6);
	dots_of(t, 6, d, &dw);
	assert_int_equal(d[0][0], 1);
	assert_int_equal(d[15][dw / 2], 1);
	assert_non_null(strstr(t, "1.7e+308┤"));
	assert_non_null(strstr(t, "-1.7e+308┤"));
	free(t);

	double sx[2] = { 0, 1 }, sy[2] = { 4e-320, 1e-320 };
	cli_series tiny = { sx, sy, 2, "tiny" };
	t = render_ok(&tiny, 1, 40, 6, 0, 40, 6);
	dots_of(t, 6, d, &dw);
	assert_int_equal(d[0][0], 1);
	assert_int_equal(d[15][dw - 1], 1);
	free(t);

	/* close values: more digits until the labels differ */
	double cy[2] = { 1.0001, 1.0002 };
	cli_series close = { sx, cy, 2, "close" };
	t = render_ok(&close, 1, 30, 4, 0, 30, 4);
	assert_non_null(strstr(t, "1.0002┤"));
	assert_non_null(strstr(t, "1.0001┤"));
	free(t);
}

/* Many more points than columns: each dot column spans its points' min to
 * max, so a single spike shows. */
static void many_points_keep_spikes(void **state)
{
	unsigned char d[16][MAXDOT];
	int dw;
	enum { N = 100000 };
	double *x = malloc(N * sizeof(double)), *y = malloc(N * sizeof(double));
	assert_non_null(x);
	assert_non_null(y);
	for (int i = 0; i < N; i++) {
		x[i] = i;
		y[i] = 1 + 0.01 * (i % 7);
	}
	y[N / 2] = 10; /* the spike */
	cli_series s = { x, y, N, "train" };
	char *t = render_ok(&s, 1, 20, 4, 0, 20, 4);
	dots_of(t, 4, d, &dw);
	int top = 0;
	for (int xx = 0; xx < dw; xx++)
		top += d[0][xx];
	assert_true(top >= 1 && top <= 2);
	assert_non_null(strstr(t, "10┤"));
	assert_non_null(strstr(t, "99999"));
	free(t);
	free(x);
	free(y);
}

/* Labels: cut to the room left, controls and bad bytes as '?'; bad
 * arguments give NULL. */
static void labels_and_refusals(void **state)
{
	cli_series s[2] = { { X11, X11, 11, "a\x01\xff\xe2\x82\xac" },
			    { X11, X11, 11, "a very long label that cannot fit" } };
	char *t = render_ok(s, 2, 20, 4, 0, 20, 4);
	assert_non_null(strstr(t, "a??€"));
	free(t);
	assert_null(cli_chart_render(s, 3, 20, 4, 0));
	assert_null(cli_chart_render(s, -1, 20, 4, 0));
	assert_null(cli_chart_render(NULL, 1, 20, 4, 0));
	cli_series nox = { NULL, X11, 11, "x" };
	assert_null(cli_chart_render(&nox, 1, 20, 4, 0));
}

/* Every size from the minimum up, every style, one and two series: valid
 * UTF-8 of the promised shape (under ASan: no overrun). */
static void every_size_well_formed(void **state)
{
	double ty[11], ex[4] = { 1, 4, 7, 10 }, ey[4] = { 9, NAN, 3, -2 };
	for (int i = 0; i < 11; i++)
		ty[i] = 10 - i + (i % 2) * 0.5;
	cli_series s[2] = { { X11, ty, 11, "train" }, { ex, ey, 4, "eval \xce\xbb" } };
	for (int colour = -1; colour <= 1; colour++)
		for (int rows = 4; rows <= 9; rows++)
			for (int cols = 20; cols <= 48; cols++)
				for (int ns = 0; ns <= 2; ns++)
					free(render_ok(s, ns, cols, rows, colour, cols, rows));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rising_line_exact),   cmocka_unit_test(single_point_dots),
		cmocka_unit_test(nan_and_inf_skipped), cmocka_unit_test(empty_box),
		cmocka_unit_test(flat_line),           cmocka_unit_test(two_series_distinguishable),
		cmocka_unit_test(clamps_and_extremes), cmocka_unit_test(many_points_keep_spikes),
		cmocka_unit_test(labels_and_refusals), cmocka_unit_test(every_size_well_formed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
