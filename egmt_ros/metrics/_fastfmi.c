/* Fast-FMI windows in C: the algorithm of egmt_ros/metrics/fmi.py (_stats and _fmi_pairs, see the docstrings
 * there), all in double precision, for chunks of NB windows of one window row held "structure of arrays"
 * (array[k * NB + n] = position k of window n), so that the compiler vectorises every loop over the windows.
 * Compiled at run time by egmt_ros/metrics/_native.py (-O3 -march=native -ffp-contract=off: no fused
 * multiply-adds, so the branch-deciding arithmetic rounds as numpy's does). No Python API: loaded with ctypes.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NB 64 /* windows per chunk */

/* log2(x) for a positive normal double, branch-free so that loops calling it vectorise: x = 2^e m with
 * m in [sqrt(1/2), sqrt(2)), log2(m) = 2 atanh(s) / ln 2 with s = (m - 1) / (m + 1), |s| <= 0.1716, by its
 * series to s^23 (truncation < 1e-20). Exact for powers of two; within 2e-15 of libm's log2 elsewhere. */
static inline double log2_pos(double x) {
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    int e = (int)((uint32_t)(u >> 52) & 0x7ff) - 1023;
    u = (u & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL;
    double m;
    memcpy(&m, &u, sizeof m);
    int big = m > 1.4142135623730951;
    m = big ? 0.5 * m : m;
    e += big;
    double s = (m - 1.0) / (m + 1.0), s2 = s * s;
    double p = 1.0 / 23;
    p = p * s2 + 1.0 / 21;
    p = p * s2 + 1.0 / 19;
    p = p * s2 + 1.0 / 17;
    p = p * s2 + 1.0 / 15;
    p = p * s2 + 1.0 / 13;
    p = p * s2 + 1.0 / 11;
    p = p * s2 + 1.0 / 9;
    p = p * s2 + 1.0 / 7;
    p = p * s2 + 1.0 / 5;
    p = p * s2 + 1.0 / 3;
    p = p * s2 + 1.0;
    return (double)e + s * p * 2.8853900817779268; /* 2 / ln 2 */
}

/* g(p) = p log2 |p| (0 for p = 0), with |p| floored at DBL_MIN as in fmi.py. */
static inline double plogp(double p) {
    double a = fabs(p);
    return p * log2_pos(a > DBL_MIN ? a : DBL_MIN);
}

typedef struct {
    int l;
    double *x;      /* l x NB raw window values */
    double *pdf;    /* (l + 1) x NB: pdf, then pdf[l - 1] again */
    double *cdf;    /* (l + 1) x NB: 0, then the cdf */
    double *rpdf;   /* the same two for the reversed pdf */
    double *rcdf;
    double *cen;    /* l x NB: pdf - 1/l */
    double *lpdf;   /* l x NB: log2 max(pdf, DBL_MIN) */
    double *rlpdf;  /* the same, reversed */
    double ent[NB], sd[NB], cen2[NB], sumcdf[NB];
} Stats;

static int stats_alloc(Stats *st, int l) {
    st->l = l;
    st->x = malloc(sizeof(double) * NB * (size_t)(8 * l + 4));
    if (!st->x) return -1;
    st->pdf = st->x + NB * l;
    st->cdf = st->pdf + NB * (l + 1);
    st->rpdf = st->cdf + NB * (l + 1);
    st->rcdf = st->rpdf + NB * (l + 1);
    st->cen = st->rcdf + NB * (l + 1);
    st->lpdf = st->cen + NB * l;
    st->rlpdf = st->lpdf + NB * l;
    return 0;
}

/* Window values, column-major inside the window (MATLAB's sub(:)), for windows (r, c0 .. c0 + nb - 1). */
#define INLINE static inline __attribute__((always_inline))

INLINE void load(Stats *st, const double *img, int64_t width, const int w, int64_t r, int64_t c0, int nb) {
    for (int col = 0; col < w; col++)
        for (int row = 0; row < w; row++) {
            const double *src = img + (r + row) * width + c0 + col;
            double *restrict dst = st->x + (col * w + row) * NB;
            #pragma GCC ivdep
            for (int n = 0; n < NB; n++) dst[n] = src[n < nb ? n : nb - 1]; /* a short chunk repeats its last window */
        }
}

/* fmi.py's _stats: pdf (min-max normalised window over its sum; a flat window becomes uniform), cdfs of the
 * pdf and of the reversed pdf, entropy in bits, SD over positions 1..l, centred pdf, its sum of squares. */
INLINE void stats(Stats *st, int nb, const int l) {
    const double *restrict x = st->x;
    double *restrict pdf = st->pdf, *restrict cdf = st->cdf, *restrict rpdf = st->rpdf, *restrict rcdf = st->rcdf;
    double *restrict cen = st->cen, *restrict ent = st->ent, *restrict cen2 = st->cen2, *restrict sumcdf = st->sumcdf;
    double *restrict lpdf = st->lpdf, *restrict rlpdf = st->rlpdf;
    double lo[NB], tot[NB], m1[NB], m2[NB];
    #pragma GCC ivdep
    for (int n = 0; n < NB; n++) lo[n] = x[n];
    for (int k = 1; k < l; k++)
        #pragma GCC ivdep
        for (int n = 0; n < NB; n++) {
            double v = x[k * NB + n];
            lo[n] = v < lo[n] ? v : lo[n];
        }
    #pragma GCC ivdep
    for (int n = 0; n < NB; n++) tot[n] = 0.0;
    for (int k = 0; k < l; k++)
        #pragma GCC ivdep
        for (int n = 0; n < NB; n++) {
            double p = x[k * NB + n] - lo[n];
            pdf[k * NB + n] = p;
            tot[n] = k ? tot[n] + p : p;
        }
    for (int k = 0; k < l; k++)
        #pragma GCC ivdep
        for (int n = 0; n < NB; n++) {
            int flat = tot[n] == 0.0; /* a sum of non-negative numbers is 0 only when all are 0 */
            double num = pdf[k * NB + n];
            pdf[k * NB + n] = (flat ? 1.0 : num) / (flat ? (double)l : tot[n]);
        }
    #pragma GCC ivdep
    for (int n = 0; n < NB; n++) {
        pdf[l * NB + n] = pdf[(l - 1) * NB + n];
        cdf[n] = 0.0;
        rcdf[n] = 0.0;
        ent[n] = 0.0;
        cen2[n] = 0.0;
        sumcdf[n] = 0.0;
        m1[n] = 0.0;
        m2[n] = 0.0;
    }
    for (int k = 0; k < l; k++)
        #pragma GCC ivdep
        for (int n = 0; n < NB; n++) {
            double p = pdf[k * NB + n], rp = pdf[(l - 1 - k) * NB + n];
            cdf[(k + 1) * NB + n] = k ? cdf[k * NB + n] + p : p;
            rcdf[(k + 1) * NB + n] = k ? rcdf[k * NB + n] + rp : rp;
            rpdf[k * NB + n] = rp;
        }
    for (int k = 0; k < l; k++) {
        const double pos = k + 1.0;
        #pragma GCC ivdep
        for (int n = 0; n < NB; n++) {
            double p = pdf[k * NB + n];
            double lp = log2_pos(p > DBL_MIN ? p : DBL_MIN);
            lpdf[k * NB + n] = lp;
            ent[n] -= p * lp;
            m1[n] += pos * p;
            m2[n] += pos * pos * p;
            double ce = p - 1.0 / (double)l;
            cen[k * NB + n] = ce;
            cen2[n] += ce * ce;
            sumcdf[n] += cdf[(k + 1) * NB + n];
        }
    }
    for (int k = 0; k < l; k++)
        #pragma GCC ivdep
        for (int n = 0; n < NB; n++) rlpdf[k * NB + n] = lpdf[(l - 1 - k) * NB + n];
    #pragma GCC ivdep
    for (int n = 0; n < NB; n++) {
        rpdf[l * NB + n] = pdf[n];
        double var = m2[n] - m1[n] * m1[n];
        st->sd[n] = sqrt(var > 0.0 ? var : 0.0);
    }
}

typedef struct {
    double *ub, *us; /* (l + 1) x NB: the source's cdf table / pdf table, forward or reversed per window */
    double *uls;     /* l x NB: log2 of us */
    double *ulo, *flo, *uat, *fat, *ulat, *flat; /* l x NB: table entries selected by the ranks (see pairs) */
    double *r, *lq;  /* l x NB ranks */
} PairScratch;

/* One (i, j) step of the rank loop in pairs(), for nb windows (a function of its own so that the pointers are
 * restrict-qualified parameters: the loop then vectorises). */
__attribute__((noinline)) static void rank_step(int nb, const double *restrict fi, const double *restrict uj, const double *restrict fpi,
                      const double *restrict usj, const double *restrict flpi, const double *restrict ulsj,
                      double *restrict ri, double *restrict lqj, double *restrict uloi, double *restrict floj,
                      double *restrict uati, double *restrict fatj, double *restrict ulati, double *restrict flatj) {
    #pragma GCC ivdep
    for (int n = 0; n < NB; n++) {
        double u = uj[n], fv = fi[n], u0 = uloi[n], f0 = floj[n];
        double umax = u > u0 ? u : u0, fmx = fv > f0 ? fv : f0;
        double one = u < fv ? 1.0 : 0.0;
        ri[n] += one;
        lqj[n] += one;
        uloi[n] = u < fv ? umax : u0;
        floj[n] = u < fv ? f0 : fmx;
        uati[n] = u < fv ? uati[n] : usj[n];
        fatj[n] = u < fv ? fpi[n] : fatj[n];
        ulati[n] = u < fv ? ulati[n] : ulsj[n];
        flatj[n] = u < fv ? flpi[n] : flatj[n];
    }
}

/* fmi.py's _fmi_pairs for nb window pairs: out[n] += fmi(f_n, s_n), or += 1 for equal raw windows. */
INLINE void pairs(const Stats *f, const Stats *s, PairScratch *ps, int nb, double *restrict out, const int l) {
    const double *restrict fx = f->x, *restrict fpdf = f->pdf, *restrict fcdf = f->cdf, *restrict fcen = f->cen;
    const double *restrict sx = s->x, *restrict spdf = s->pdf, *restrict scdf = s->cdf, *restrict scen = s->cen;
    const double *restrict srpdf = s->rpdf, *restrict srcdf = s->rcdf;
    double *restrict ub = ps->ub, *restrict us = ps->us, *restrict ulo = ps->ulo, *restrict flo = ps->flo;
    double *restrict uat = ps->uat, *restrict fat = ps->fat, *restrict ulat = ps->ulat, *restrict flat = ps->flat;
    double *restrict uls = ps->uls;
    const double *restrict flp = f->lpdf, *restrict slp = s->lpdf, *restrict srlp = s->rlpdf;
    double *restrict r = ps->r, *restrict lq = ps->lq;
    double c[NB], phi[NB], beta[NB], lbeta[NB], smix[NB], sprod[NB], e1[NB], e2[NB];
    int neg[NB], eq[NB];
    #pragma GCC ivdep
    for (int n = 0; n < NB; n++) {
        c[n] = 0.0;
        eq[n] = 1;
    }
    for (int k = 0; k < l; k++)
        #pragma GCC ivdep
        for (int n = 0; n < NB; n++) {
            c[n] += scen[k * NB + n] * fcen[k * NB + n];
            eq[n] &= sx[k * NB + n] == fx[k * NB + n];
        }
    #pragma GCC ivdep
    for (int n = 0; n < NB; n++) {
        double num = c[n];
        double den = sqrt(s->cen2[n] * f->cen2[n]);
        c[n] = num != 0.0 ? num / den : 0.0;
        neg[n] = c[n] < 0.0;
    }
    /* The countermonotone coupling of (f, s) is the comonotone coupling of (f, reversed s). */
    for (int k = 0; k <= l; k++)
        #pragma GCC ivdep
        for (int n = 0; n < NB; n++) {
            double fw = scdf[k * NB + n], rv = srcdf[k * NB + n], pf = spdf[k * NB + n], pr = srpdf[k * NB + n];
            ub[k * NB + n] = neg[n] ? rv : fw;
            us[k * NB + n] = neg[n] ? pr : pf;
        }
    for (int k = 0; k < l; k++)
        #pragma GCC ivdep
        for (int n = 0; n < NB; n++) {
            double lf = slp[k * NB + n], lr = srlp[k * NB + n];
            uls[k * NB + n] = neg[n] ? lr : lf;
        }
    /* Ranks of the two cdfs against each other (both non-decreasing), with the table entries they select:
     * r_i = #{j: U_j < F_i}, U_(r_i - 1) = max{U_j < F_i} (0 if none), u_(r_i) (u_(l-1) for r_i = l);
     * l - q_j = #{i: U_j < F_i}, F_(q_j - 1) = max{F_i <= U_j}, f_(q_j). Descending loops: the last index
     * written is the smallest. */
    for (int k = 0; k < l; k++)
        #pragma GCC ivdep
        for (int n = 0; n < NB; n++) {
            r[k * NB + n] = 0.0;
            lq[k * NB + n] = 0.0;
            ulo[k * NB + n] = 0.0;
            flo[k * NB + n] = 0.0;
            uat[k * NB + n] = us[(l - 1) * NB + n];
            fat[k * NB + n] = fpdf[(l - 1) * NB + n];
            ulat[k * NB + n] = uls[(l - 1) * NB + n];
            flat[k * NB + n] = flp[(l - 1) * NB + n];
        }
    for (int i = l - 1; i >= 0; i--)
        for (int j = l - 1; j >= 0; j--)
            rank_step(nb, fcdf + (i + 1) * NB, ub + (j + 1) * NB, fpdf + i * NB, us + j * NB, flp + i * NB,
                      uls + j * NB, r + i * NB, lq + j * NB, ulo + i * NB, flo + j * NB, uat + i * NB, fat + j * NB,
                      ulat + i * NB, flat + j * NB);
    #pragma GCC ivdep
    for (int n = 0; n < NB; n++) {
        e1[n] = 0.0;
        e2[n] = 0.0;
    }
    for (int k = 0; k < l; k++)
        #pragma GCC ivdep
        for (int n = 0; n < NB; n++) {
            e1[n] += fcdf[(k + 1) * NB + n] * r[k * NB + n];
            e2[n] += ub[(k + 1) * NB + n] * lq[k * NB + n];
        }
    #pragma GCC ivdep
    for (int n = 0; n < NB; n++) {
        double fsum = f->sumcdf[n];
        double sum_min = (l * fsum - e1[n]) + e2[n];
        double bound = neg[n] ? (l + 1) * fsum - sum_min : sum_min;
        double cov = bound - fsum * s->sumcdf[n];
        double sd_prod = s->sd[n] * f->sd[n];
        double corr_bound = sd_prod > 0.0 ? cov / sd_prod : 0.0;
        phi[n] = (c[n] != 0.0 && corr_bound != 0.0) ? c[n] / corr_bound : 0.0;
        beta[n] = 1.0 - phi[n];
        double ab = fabs(beta[n]);
        lbeta[n] = log2_pos(ab > DBL_MIN ? ab : DBL_MIN);
        smix[n] = 0.0;
        sprod[n] = 0.0;
    }
    /* The 2l cells where the coupling can be non-zero: (i, r_i) closed by F_i, (q_j, j) closed by U_j. */
    for (int i = 0; i < l; i++)
        #pragma GCC ivdep
        for (int n = 0; n < NB; n++) {
            double u0 = ulo[i * NB + n], f0 = fcdf[i * NB + n];
            double mass = fcdf[(i + 1) * NB + n] - (f0 > u0 ? f0 : u0);
            double prod = uat[i * NB + n] * fpdf[i * NB + n] * beta[n];
            double mix = mass * phi[n] + prod;
            smix[n] += plogp(mix);
            sprod[n] += prod * (ulat[i * NB + n] + flp[i * NB + n] + lbeta[n]);
        }
    for (int j = 0; j < l; j++)
        #pragma GCC ivdep
        for (int n = 0; n < NB; n++) {
            double f0 = flo[j * NB + n], u0 = ub[j * NB + n];
            double mass = ub[(j + 1) * NB + n] - (u0 > f0 ? u0 : f0);
            double prod = fat[j * NB + n] * us[j * NB + n] * beta[n];
            double mix = mass * phi[n] + prod;
            smix[n] += plogp(mix);
            sprod[n] += prod * (flat[j * NB + n] + uls[j * NB + n] + lbeta[n]);
        }
    #pragma GCC ivdep
    for (int n = 0; n < NB; n++) {
        double h_sum = s->ent[n] + f->ent[n];
        double h_joint = -(beta[n] * lbeta[n]) + beta[n] * h_sum - (smix[n] - sprod[n]);
        double mi = h_sum - h_joint;
        double v = (mi != 0.0 && h_sum > 0.0) ? 2.0 * mi / h_sum : 0.0;
        out[n] += eq[n] ? 1.0 : v;
    }
}

/* Sum over the windows (w x w, stride 1, fully inside) of fmi(A, F) + fmi(B, F), per window row r0 .. r1 - 1,
 * into row_sums[r - r0]. Images: height x width doubles, row-major. Returns 0, or -1 if out of memory. */
INLINE void rows(const double *a, const double *b, const double *f, int64_t width, const int w, int64_t r0,
                 int64_t r1, Stats *st, PairScratch *ps, double *row_sums) {
    const int l = w * w;
    const int64_t cols = width - w + 1;
    for (int64_t r = r0; r < r1; r++) {
        double acc = 0.0;
        for (int64_t c0 = 0; c0 < cols; c0 += NB) {
            int nb = (int)(cols - c0 < NB ? cols - c0 : NB);
            double out[NB];
            load(&st[0], f, width, w, r, c0, nb);
            load(&st[1], a, width, w, r, c0, nb);
            load(&st[2], b, width, w, r, c0, nb);
            for (int k = 0; k < 3; k++) stats(&st[k], nb, l);
            for (int n = 0; n < NB; n++) out[n] = 0.0;
            pairs(&st[0], &st[1], ps, nb, out, l);
            pairs(&st[0], &st[2], ps, nb, out, l);
            for (int n = 0; n < nb; n++) acc += out[n]; /* the real windows only */
        }
        row_sums[r - r0] = acc;
    }
}

int egmt_fast_fmi_rows(const double *a, const double *b, const double *f, int64_t height, int64_t width, int w,
                       int64_t r0, int64_t r1, double *row_sums) {
    const int l = w * w;
    Stats st[3];
    PairScratch ps;
    int rc = -1;
    memset(st, 0, sizeof st);
    ps.ub = malloc(sizeof(double) * NB * (size_t)(9 * l + 2));
    ps.r = malloc(sizeof(double) * NB * (size_t)(2 * l));
    if (!ps.ub || !ps.r || stats_alloc(&st[0], l) || stats_alloc(&st[1], l) || stats_alloc(&st[2], l)) goto done;
    ps.us = ps.ub + NB * (l + 1);
    ps.ulo = ps.us + NB * (l + 1);
    ps.flo = ps.ulo + NB * l;
    ps.uat = ps.flo + NB * l;
    ps.fat = ps.uat + NB * l;
    ps.ulat = ps.fat + NB * l;
    ps.flat = ps.ulat + NB * l;
    ps.uls = ps.flat + NB * l;
    ps.lq = ps.r + NB * l;
    (void)height;
    if (w == 3)
        rows(a, b, f, width, 3, r0, r1, st, &ps, row_sums); /* compiled for 3 x 3 windows: constant loop bounds */
    else
        rows(a, b, f, width, w, r0, r1, st, &ps, row_sums);
    rc = 0;
done:
    for (int k = 0; k < 3; k++) free(st[k].x);
    free(ps.ub);
    free(ps.r);
    return rc;
}
