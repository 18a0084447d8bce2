/* cli_chart.c — the loss chart of `splitchain watch`: points onto a grid of
 * dots, dots into braille (or ASCII) cells, cells and labels into lines of
 * a fixed width. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_chart.h"
#include "sc_utf8.h"

/* What a dot holds (grid.d). */
enum { DOT_S1 = 1, DOT_S2 = 2, DOT_S2_POINT = 4 };

typedef struct grid {
	unsigned char *d; /* (dh, dw) DOT_ flags */
	int dw, dh;
} grid;

/* The text under construction: a buffer sized for the worst case up front;
 * ok drops to 0 (and nothing more is written) if that bound was wrong. */
typedef struct text {
	char *p;
	size_t n, cap;
	int ok;
	int w; /* display columns of the current line */
} text;

typedef struct range {
	double xmin, xmax, ymin, ymax;
	size_t n; /* finite points */
} range;

static const char *const colour_on[3] = { "\x1b[0m", "\x1b[36m", "\x1b[33m" };

static void put(text *t, const char *s, size_t n, int width)
{
	if (!t->ok || t->n + n >= t->cap) {
		t->ok = 0;
		return;
	}
	memcpy(t->p + t->n, s, n);
	t->n += n;
	t->p[t->n] = '\0';
	t->w += width;
}

static void puts_w(text *t, const char *s)
{
	put(t, s, strlen(s), (int)strlen(s));
}

/* An escape sequence: no width. */
static void esc(text *t, const char *s)
{
	put(t, s, strlen(s), 0);
}

static void spaces(text *t, int n)
{
	for (int i = 0; i < n; i++)
		put(t, " ", 1, 1);
}

/* Pads the line to cols columns and ends it. */
static void end_line(text *t, int cols)
{
	spaces(t, cols - t->w);
	put(t, "\n", 1, 0);
	t->w = 0;
}

/* A label, at most max columns of it: code points one column each, control
 * characters and invalid bytes as '?'. */
static void put_label(text *t, const char *s, int max)
{
	size_t n = strlen(s);
	for (size_t i = 0; i < n && max > 0; max--) {
		const unsigned char *u = (const unsigned char *)s + i;
		size_t k = sc_utf8_len(s + i, n - i);
		if (!k || u[0] < 0x20 || u[0] == 0x7F || (u[0] == 0xC2 && u[1] < 0xA0)) {
			put(t, "?", 1, 1); /* C0, DEL, C1 controls, not UTF-8 */
			i += k ? k : 1;
		} else {
			put(t, s + i, k, 1);
			i += k;
		}
	}
}

/* Where v lies between lo and hi, in [0, 1]; 0.5 when hi <= lo. Halves
 * keep hi - lo finite for values near the double range's ends. */
static double frac(double v, double lo, double hi)
{
	double f;
	if (!(hi > lo))
		return 0.5;
	if (isfinite(hi - lo))
		f = (v - lo) / (hi - lo);
	else
		f = (0.5 * v - 0.5 * lo) / (0.5 * hi - 0.5 * lo);
	if (!(f >= 0))
		return 0; /* NaN included */
	return f > 1 ? 1 : f;
}

static int finite_point(const cli_series *s, size_t i)
{
	return isfinite(s->x[i]) && isfinite(s->y[i]);
}

static range range_of(const cli_series *s, int ns)
{
	range r = { INFINITY, -INFINITY, INFINITY, -INFINITY, 0 };
	for (int k = 0; k < ns; k++)
		for (size_t i = 0; i < s[k].n; i++) {
			if (!finite_point(&s[k], i))
				continue;
			r.xmin = fmin(r.xmin, s[k].x[i]);
			r.xmax = fmax(r.xmax, s[k].x[i]);
			r.ymin = fmin(r.ymin, s[k].y[i]);
			r.ymax = fmax(r.ymax, s[k].y[i]);
			r.n++;
		}
	return r;
}

/* Marks the dots from (x0, y0) to (x1, y1) (Bresenham); dotted: every
 * other one, the end always. */
static void segment(grid *g, int x0, int y0, int x1, int y1, unsigned char flag, int dotted)
{
	int dx = abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
	int dy = -abs(y1 - y0), sy = y0 < y1 ? 1 : -1, e = dx + dy;
	for (int i = 0;; i++) {
		int last = x0 == x1 && y0 == y1;
		if (!dotted || i % 2 == 0 || last)
			g->d[(size_t)y0 * g->dw + x0] |= flag;
		if (last)
			break;
		int e2 = 2 * e;
		if (e2 >= dy) {
			e += dy;
			x0 += sx;
		}
		if (e2 <= dx) {
			e += dx;
			y0 += sy;
		}
	}
}

/* Series k (0 or 1) onto the grid; dotted: its segments every other dot. */
static void plot(grid *g, const cli_series *s, int k, const range *r, int dotted)
{
	int px = -1, py = -1;
	unsigned char line = k ? DOT_S2 : DOT_S1, point = k ? DOT_S2_POINT : DOT_S1;
	for (size_t i = 0; i < s->n; i++) {
		if (!finite_point(s, i))
			continue;
		int x = (int)lround(frac(s->x[i], r->xmin, r->xmax) * (g->dw - 1));
		int y = (int)lround((1 - frac(s->y[i], r->ymin, r->ymax)) * (g->dh - 1));
		if (px >= 0)
			segment(g, px, py, x, y, line, dotted);
		g->d[(size_t)y * g->dw + x] |= point;
		px = x;
		py = y;
	}
}

/* A step for the x axis: whole numbers as such, others %.3g. */
static void step_label(char *buf, size_t size, double x)
{
	if (x == floor(x) && fabs(x) < 1e15)
		snprintf(buf, size, "%.0f", x);
	else
		snprintf(buf, size, "%.3g", x);
}

/* The framed box of a chart with nothing to draw. */
static void empty_box(text *t, int cols, int rows, int ascii)
{
	const char *h = ascii ? "-" : "\u2500", *v = ascii ? "|" : "\u2502";
	const char *c[4] = { "\u250c", "\u2510", "\u2514", "\u2518" };
	static const char msg[] = "no data yet";
	int m = (int)strlen(msg);
	for (int r = 0; r < rows; r++) {
		int edge = r == 0 || r == rows - 1;
		if (edge)
			put(t, ascii ? "+" : c[r ? 2 : 0], ascii ? 1 : 3, 1);
		else
			put(t, v, strlen(v), 1);
		if (edge) {
			for (int i = 0; i < cols - 2; i++)
				put(t, h, strlen(h), 1);
		} else if (r == (rows - 1) / 2) {
			spaces(t, (cols - 2 - m) / 2);
			puts_w(t, msg);
			spaces(t, cols - 1 - t->w);
		} else {
			spaces(t, cols - 2);
		}
		if (edge)
			put(t, ascii ? "+" : c[r ? 3 : 1], ascii ? 1 : 3, 1);
		else
			put(t, v, strlen(v), 1);
		end_line(t, cols);
	}
}

/* One plot row of braille cells, coloured as the header says. */
static void braille_row(text *t, const grid *g, int row, int colour)
{
	static const unsigned char bit[4][2] = {
		{ 0x01, 0x08 }, { 0x02, 0x10 }, { 0x04, 0x20 }, { 0x40, 0x80 }
	};
	int cur = 0;
	for (int c = 0; c < g->dw / 2; c++) {
		unsigned bits = 0, who = 0;
		for (int j = 0; j < 4; j++)
			for (int i = 0; i < 2; i++) {
				unsigned char f = g->d[(size_t)(row * 4 + j) * g->dw + c * 2 + i];
				if (f)
					bits |= bit[j][i];
				who |= (f & DOT_S1 ? 1u : 0u) |
				       (f & (DOT_S2 | DOT_S2_POINT) ? 2u : 0u);
			}
		int want = colour > 0 && bits ? (who & 2 ? 2 : 1) : 0;
		if (want != cur) {
			esc(t, colour_on[want]);
			cur = want;
		}
		if (!bits) {
			put(t, " ", 1, 1);
		} else { /* U+2800 + bits in UTF-8 */
			char u[3] = { (char)0xE2, (char)(0xA0 | (bits >> 6)),
				      (char)(0x80 | (bits & 0x3F)) };
			put(t, u, 3, 1);
		}
	}
	if (cur)
		esc(t, colour_on[0]);
}

static void ascii_row(text *t, const grid *g, int row)
{
	for (int c = 0; c < g->dw; c++) {
		unsigned char f = g->d[(size_t)row * g->dw + c];
		put(t, f & DOT_S2_POINT ? "o" : f & DOT_S1 ? "*" : f & DOT_S2 ? "." : " ", 1, 1);
	}
}

/* style: 0 colour, 1 monochrome braille, 2 ASCII */
static void legend(text *t, const cli_series *s, int ns, int cols, int style)
{
	static const char *const sample[3][2] = {
		{ "\u2812\u2812", "\u2812\u2812" }, /* colour */
		{ "\u2812\u2812", "\u2802\u2802" }, /* monochrome: series 2 dotted */
		{ "*", "o" },                       /* ASCII */
	};
	int sw = style == 2 ? 1 : 2;
	for (int k = 0; k < ns; k++) {
		char dflt[24];
		int room = cols - t->w - (k ? 2 : 0) - sw - 1;
		if (room < 1)
			break;
		if (k)
			spaces(t, 2);
		if (style == 0)
			esc(t, colour_on[k + 1]);
		put(t, sample[style][k], strlen(sample[style][k]), sw);
		if (style == 0)
			esc(t, colour_on[0]);
		spaces(t, 1);
		snprintf(dflt, sizeof(dflt), "series %d", k + 1);
		put_label(t, s[k].label ? s[k].label : dflt, room);
	}
	end_line(t, cols);
}

char *cli_chart_render(const cli_series *s, int ns, int cols, int rows, int colour)
{
	int ascii = colour == CLI_CHART_ASCII;
	text t = { 0 };
	grid g = { 0 };

	if (ns < 0 || ns > 2 || (ns && !s))
		return NULL;
	for (int k = 0; k < ns; k++)
		if (s[k].n && (!s[k].x || !s[k].y))
			return NULL;
	if (ascii)
		colour = 0;
	cols = cols < CLI_CHART_MIN_COLS   ? CLI_CHART_MIN_COLS
	       : cols > CLI_CHART_MAX_COLS ? CLI_CHART_MAX_COLS
					   : cols;
	rows = rows < CLI_CHART_MIN_ROWS   ? CLI_CHART_MIN_ROWS
	       : rows > CLI_CHART_MAX_ROWS ? CLI_CHART_MAX_ROWS
					   : rows;
	/* a column: at most a colour change, a glyph of 4 bytes, a reset */
	t.cap = (size_t)rows * ((size_t)cols * 20 + 64) + 1;
	t.ok = 1;
	if (!(t.p = malloc(t.cap)))
		return NULL;
	t.p[0] = '\0';

	range r = range_of(s, ns);
	if (r.n == 0) {
		empty_box(&t, cols, rows, ascii);
		goto done;
	}
	/* the y labels: max on the top row, min on the bottom; flat: the value
	 * on the row of the line */
	char top[32], bot[32], xa[32], xb[32];
	int flat = !(r.ymax > r.ymin), H = rows - 2;
	for (int prec = 3; prec <= 17; prec++) { /* %.3g, more when it reads the same */
		snprintf(top, sizeof(top), "%.*g", prec, r.ymax);
		snprintf(bot, sizeof(bot), "%.*g", prec, r.ymin);
		if (flat || strcmp(top, bot))
			break;
	}
	int lw = (int)(strlen(top) > strlen(bot) ? strlen(top) : strlen(bot));
	if (lw > cols - 9)
		lw = cols - 9;
	int pw = cols - lw - 1;
	g.dw = ascii ? pw : 2 * pw;
	g.dh = ascii ? H : 4 * H;
	if (!(g.d = calloc((size_t)g.dw * g.dh, 1))) {
		free(t.p);
		return NULL;
	}
	for (int k = 0; k < ns; k++)
		plot(&g, &s[k], k, &r, k && !ascii && colour == 0);
	int flat_row = (int)lround(0.5 * (g.dh - 1)) / (ascii ? 1 : 4);
	for (int row = 0; row < H; row++) {
		const char *lab = flat           ? (row == flat_row ? top : NULL)
				  : row == 0     ? top
				  : row == H - 1 ? bot
						 : NULL;
		int n = lab ? (int)strlen(lab) : 0;
		n = n > lw ? lw : n;
		spaces(&t, lw - n);
		if (lab)
			put(&t, lab, (size_t)n, n);
		if (ascii)
			put(&t, "|", 1, 1);
		else
			put(&t, lab ? "\u2524" : "\u2502", 3, 1);
		if (ascii)
			ascii_row(&t, &g, row);
		else
			braille_row(&t, &g, row, colour);
		end_line(&t, cols);
	}
	/* the x axis: the first step under the first column, the last under
	 * the last; one step: under the middle */
	step_label(xa, sizeof(xa), r.xmin);
	step_label(xb, sizeof(xb), r.xmax);
	int na = (int)strlen(xa), nb = (int)strlen(xb);
	spaces(&t, lw);
	put(&t, ascii ? "+" : "\u2514", ascii ? 1 : 3, 1);
	if (!(r.xmax > r.xmin)) {
		if (na <= pw) {
			spaces(&t, (pw - na) / 2);
			puts_w(&t, xa);
		}
	} else if (na + 1 + nb <= pw) {
		puts_w(&t, xa);
		spaces(&t, pw - na - nb);
		puts_w(&t, xb);
	} else if (nb <= pw) {
		spaces(&t, pw - nb);
		puts_w(&t, xb);
	}
	end_line(&t, cols);
	legend(&t, s, ns, cols, ascii ? 2 : colour > 0 ? 0 : 1);
done:
	free(g.d);
	if (!t.ok) {
		free(t.p);
		return NULL;
	}
	return t.p;
}
