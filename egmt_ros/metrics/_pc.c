/* Phase congruency per orientation in C: the per-pixel arithmetic of egmt_ros/metrics/phase.py's _orientation
 * (myphasecong3.m in single precision, see the docstrings there) fused into one pass over the pixels. The
 * filter responses eo (complex64, nscale x npix, interleaved re/im) come from the FFT in Python. Compiled and
 * loaded by egmt_ros/metrics/_native.py (IEEE arithmetic, no fused multiply-adds). No Python API.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NSCALE 4 /* phase.py's PC_NSCALE (it checks) */

/* exp(x) for float32 x, evaluated in double and rounded once (within an ulp of expf, branch-free so that loops
 * vectorise): exp(x) = 2^k 2^r, k = nearest integer to x / ln 2, |r| <= 1/2, 2^r by its Taylor series to r^13. */
static inline float expf_v(float xf) {
    double t = (double)xf * 1.4426950408889634;
    t = t < -1000.0 ? -1000.0 : (t > 1000.0 ? 1000.0 : t);
    double k = floor(t + 0.5);
    double r = (t - k) * 0.6931471805599453;
    double q = 1.0 / 6227020800.0;
    q = q * r + 1.0 / 479001600.0;
    q = q * r + 1.0 / 39916800.0;
    q = q * r + 1.0 / 3628800.0;
    q = q * r + 1.0 / 362880.0;
    q = q * r + 1.0 / 40320.0;
    q = q * r + 1.0 / 5040.0;
    q = q * r + 1.0 / 720.0;
    q = q * r + 1.0 / 120.0;
    q = q * r + 1.0 / 24.0;
    q = q * r + 1.0 / 6.0;
    q = q * r + 0.5;
    q = q * r + 1.0;
    q = q * r + 1.0;
    uint64_t bits = (uint64_t)((int64_t)k + 1023) << 52;
    double two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    return (float)(q * two_k);
}

/* |z| of a complex64 value rounded to float32 from double precision (as glibc's hypotf). */
static inline float absf(float re, float im) {
    return (float)sqrt((double)re * re + (double)im * im);
}

/* Squared amplitudes of the smallest scale (for the median behind Kovesi's noise estimate): sq[p] = |eo0|^2. */
void egmt_pc_noise(const float *restrict eo0, int64_t npix, float *restrict sq) {
    for (int64_t p = 0; p < npix; p++) {
        float a = absf(eo0[2 * p], eo0[2 * p + 1]);
        sq[p] = a * a;
    }
}

int egmt_pc_nscale(void) { return NSCALE; }

/* One orientation (NSCALE scales) for pixels p0 .. p1 - 1, accumulated into the five sums over orientations:
 * total_an += sum_s A_s; total_energy += W (E - T)_+ with E = sum_s (e_s . u) - |e_s x u| for the unit vector u of
 * sum_s eo_s, W = 1 / (1 + exp((cutoff - spread) g)), spread = (sum A / (max A + eps)) / nscale; with
 * pc_o = W (E - T)_+ / sum A: cov_x2 += (pc_o cos)^2, cov_y2 += (pc_o sin)^2, cov_xy += pc_o^2 cos sin.
 * (Single precision as phase.py, the thresholded energy and what follows in double; accumulators float32.) */
void egmt_pc_orientation(const float *restrict eo, int64_t npix, int64_t p0, int64_t p1,
                         double threshold, float cos_a, float sin_a, float eps, float cutoff, float g,
                         float *restrict total_an, float *restrict total_energy, float *restrict cov_x2,
                         float *restrict cov_y2, float *restrict cov_xy) {
    const double ca = cos_a, sa = sin_a;
    for (int64_t p = p0; p < p1; p++) {
        float ur = eo[2 * p], ui = eo[2 * p + 1];
        float sum_an = absf(ur, ui), max_an = sum_an;
        for (int s = 1; s < NSCALE; s++) {
            float re = eo[2 * (s * npix + p)], im = eo[2 * (s * npix + p) + 1];
            float a = absf(re, im);
            sum_an += a;
            max_an = a > max_an ? a : max_an;
            ur += re;
            ui += im;
        }
        float scl = 1.0f / (absf(ur, ui) + eps);
        ur *= scl;
        ui *= scl;
        float even = eo[2 * p] * ur + eo[2 * p + 1] * ui;           /* Re(eo conj(u)) */
        float odd = fabsf(eo[2 * p + 1] * ur - eo[2 * p] * ui);     /* |Im(eo conj(u))| */
        for (int s = 1; s < NSCALE; s++) {
            float re = eo[2 * (s * npix + p)], im = eo[2 * (s * npix + p) + 1];
            even += re * ur + im * ui;
            odd += fabsf(im * ur - re * ui);
        }
        float energy = even - odd;
        double weighted = (double)energy - threshold;
        weighted = weighted > 0.0 ? weighted : 0.0;
        float width = sum_an / (max_an + eps) / (float)NSCALE;
        float weight = 1.0f / (1.0f + expf_v((cutoff - width) * g));
        weighted *= weight;
        double pc_o = sum_an > 0.0f ? weighted / sum_an : 0.0;
        double cx = pc_o * ca, cy = pc_o * sa;
        total_an[p] += sum_an;
        total_energy[p] = (float)((double)total_energy[p] + weighted);
        cov_x2[p] = (float)((double)cov_x2[p] + cx * cx);
        cov_y2[p] = (float)((double)cov_y2[p] + cy * cy);
        cov_xy[p] = (float)((double)cov_xy[p] + cx * cy);
    }
}

/* out[s][p] = spec[p] * bank[s][p] for the pixels p0 .. p1 - 1 (complex64 times float32, per component). */
void egmt_pc_filter(const float *restrict spec, const float *restrict bank, int64_t npix, int nscale, int64_t p0,
                    int64_t p1, float *restrict out) {
    for (int s = 0; s < nscale; s++) {
        const float *restrict b = bank + s * npix;
        float *restrict o = out + 2 * s * npix;
        for (int64_t p = p0; p < p1; p++) {
            o[2 * p] = spec[2 * p] * b[p];
            o[2 * p + 1] = spec[2 * p + 1] * b[p];
        }
    }
}

/* The k-th and (k+1)-th smallest (0-based) of n >= k + 2 non-negative float32 values, into out[0], out[1], by
 * radix selection on their bit patterns (which sort as the values do): a histogram of the upper 16 bits, then of
 * the lower 16 bits inside the selected bucket (a third pass only when the (k+1)-th lies in the next bucket).
 * The values are not modified. Returns 0, or -1 if out of memory. */
int egmt_select2_nonneg(const float *restrict x, int64_t n, int64_t k, float *restrict out) {
    const uint32_t *restrict u = (const uint32_t *)x;
    int32_t *hist = calloc(65536, sizeof(int32_t));
    if (!hist) return -1;
    for (int64_t i = 0; i < n; i++) hist[u[i] >> 16]++;
    uint32_t hi = 0;
    while (k >= hist[hi]) k -= hist[hi++];
    uint32_t next_hi = hi + 1; /* the next non-empty upper bucket, if the (k+1)-th is not in this one */
    while (next_hi < 65536 && hist[next_hi] == 0) next_hi++;
    memset(hist, 0, 65536 * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++)
        if ((u[i] >> 16) == hi) hist[u[i] & 0xffffu]++;
    uint32_t lo = 0;
    while (k >= hist[lo]) k -= hist[lo++];
    uint32_t first = (hi << 16) | lo, second = first;
    if (k + 1 >= hist[lo]) { /* the (k+1)-th is the next value present */
        uint32_t lo2 = lo + 1;
        while (lo2 < 65536 && hist[lo2] == 0) lo2++;
        if (lo2 < 65536) {
            second = (hi << 16) | lo2;
        } else { /* smallest value of the next upper bucket */
            second = UINT32_MAX;
            for (int64_t i = 0; i < n; i++)
                if ((u[i] >> 16) == next_hi && u[i] < second) second = u[i];
        }
    }
    free(hist);
    memcpy(&out[0], &first, sizeof first);
    memcpy(&out[1], &second, sizeof second);
    return 0;
}

/* filter2(k k', in, 'same') with zero padding for a separable symmetric kernel k of odd length taps (<= 31):
 * a horizontal then a vertical pass, each summing the taps in order. tmp: rows x cols scratch. */
static void gauss_same(const double *restrict in, int64_t rows, int64_t cols, const double *restrict k, int taps,
                       double *restrict tmp, double *restrict out) {
    const int r = taps / 2;
    for (int64_t y = 0; y < rows; y++) {
        const double *restrict row = in + y * cols;
        double *restrict dst = tmp + y * cols;
        for (int64_t x = 0; x < cols; x++) dst[x] = 0.0;
        for (int t = 0; t < taps; t++) { /* tap t reads row[x + t - r]: x in [r - t, cols + r - t) */
            const int64_t lo = r - t > 0 ? r - t : 0, hi = cols + r - t < cols ? cols + r - t : cols;
            const double kt = k[t];
            const int64_t off = t - r;
            for (int64_t x = lo; x < hi; x++) dst[x] += kt * row[x + off];
        }
    }
    for (int64_t y = 0; y < rows; y++) {
        double *restrict dst = out + y * cols;
        for (int64_t x = 0; x < cols; x++) dst[x] = 0.0;
        for (int t = 0; t < taps; t++) {
            int64_t yy = y + t - r;
            if (yy < 0 || yy >= rows) continue;
            const double *restrict src = tmp + yy * cols;
            const double kt = k[t];
            for (int64_t x = 0; x < cols; x++) dst[x] += kt * src[x];
        }
    }
}

/* Q_P's correlation score of one feature map (phase.py's _feature_score): with G the Gaussian window,
 * mu_f = G ff, var_f = G ff^2 - mu_f^2; for each source map X in (x1, x2, xmax) masked by m (s = X m):
 * r = (G(s ff) - G s mu_f + c) / (sqrt|(G s^2 - (G s)^2) var_f| + c), 0 outside m; the best of the three per pixel,
 * summed over all pixels into *sum. Masks are bytes (0/1). Returns 0, or -1 if out of memory. */
int egmt_qp_feature(const double *restrict x1, const double *restrict x2, const double *restrict xmax,
                    const double *restrict ff, const uint8_t *restrict m1, const uint8_t *restrict m2,
                    const uint8_t *restrict mmax, int64_t rows, int64_t cols, const double *restrict k, int taps,
                    double c, double *restrict sum) {
    const int64_t n = rows * cols;
    double *buf = malloc(sizeof(double) * (size_t)n * 7);
    if (!buf) return -1;
    double *mu_f = buf, *var_f = buf + n, *prod = buf + 2 * n, *mu = buf + 3 * n, *var = buf + 4 * n;
    double *cov = buf + 5 * n, *tmp = buf + 6 * n;
    double *best = malloc(sizeof(double) * (size_t)n);
    if (!best) {
        free(buf);
        return -1;
    }
    gauss_same(ff, rows, cols, k, taps, tmp, mu_f);
    for (int64_t p = 0; p < n; p++) prod[p] = ff[p] * ff[p];
    gauss_same(prod, rows, cols, k, taps, tmp, var_f);
    for (int64_t p = 0; p < n; p++) var_f[p] -= mu_f[p] * mu_f[p];
    const double *srcs[3] = {x1, x2, xmax};
    const uint8_t *masks[3] = {m1, m2, mmax};
    for (int q = 0; q < 3; q++) {
        const double *restrict xs = srcs[q];
        const uint8_t *restrict ms = masks[q];
        for (int64_t p = 0; p < n; p++) prod[p] = ms[p] ? xs[p] : 0.0;
        gauss_same(prod, rows, cols, k, taps, tmp, mu);
        for (int64_t p = 0; p < n; p++) prod[p] = ms[p] ? xs[p] * xs[p] : 0.0;
        gauss_same(prod, rows, cols, k, taps, tmp, var);
        for (int64_t p = 0; p < n; p++) prod[p] = ms[p] ? xs[p] * ff[p] : 0.0;
        gauss_same(prod, rows, cols, k, taps, tmp, cov);
        for (int64_t p = 0; p < n; p++) {
            double v = var[p] - mu[p] * mu[p];
            double cv = (cov[p] - mu[p] * mu_f[p]) + c;
            double den = sqrt(fabs(v * var_f[p])) + c;
            double r = ms[p] ? cv / den : 0.0;
            best[p] = q == 0 ? r : (r > best[p] ? r : best[p]);
        }
    }
    double acc = 0.0;
    for (int64_t p = 0; p < n; p++) acc += best[p];
    *sum = acc;
    free(best);
    free(buf);
    return 0;
}
