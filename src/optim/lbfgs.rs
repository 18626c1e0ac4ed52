//! L-BFGS on flat f32 parameters with the semantics of PyTorch's `torch.optim.LBFGS`.
//!
//! One [`Lbfgs::step`] call is one `optimizer.step(closure)`: up to `max_iter` iterations (and
//! `max_eval` closure evaluations), with the curvature history, last direction and step kept across
//! calls like torch's `state`. The closure evaluates the loss at the given parameters and writes the
//! gradient; in the engine it runs on the GPU, the optimizer's own vector work is on the CPU.
//!
//! Vectors are f32 as in a float32 torch run; scalars that torch holds in 0-dim f32 tensors (dot
//! products, `ro`, `H_diag`, `gtd`) are f32 here, scalars torch keeps as Python floats (losses, the
//! step `t`, tolerances) are f64. `p.add_(d, alpha=t)` is a fused multiply-add as in ATen's CPU
//! kernel. Dot products are sequential f32 sums (MKL's `sdot` agrees exactly for 2 elements, to an
//! ulp or so for longer vectors), and torch's float32 `sqrt` is occasionally 1 ulp off the correctly
//! rounded one used here, so long runs on ill-conditioned problems drift apart at that level.
//! Scalars mix Python floats and float32 tensors exactly as torch's code does (the private `Py` type); `lr`
//! is f32 here, a Python float in torch, so pick an `lr` representable in f32 to compare runs.

use std::collections::VecDeque;

use crate::{Error, Result};

/// Line search of [`Lbfgs`] (torch's `line_search_fn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineSearch {
    /// torch's `_strong_wolfe`: bracketing then zoom with cubic interpolation, c1 = 1e-4, c2 = 0.9,
    /// at most `max_eval` minus the evaluations already spent in this step.
    StrongWolfe,
    /// Fixed step `t` (`line_search_fn=None`).
    None,
}

/// Settings of [`Lbfgs`]; the defaults are torch's.
#[derive(Clone, Debug, PartialEq)]
pub struct LbfgsConfig {
    pub lr: f32,
    /// Iterations per [`Lbfgs::step`] call.
    pub max_iter: usize,
    /// Closure evaluations per [`Lbfgs::step`] call; `None` gives `max_iter * 5 / 4`.
    pub max_eval: Option<usize>,
    /// Stop when `max |g| <= tolerance_grad`.
    pub tolerance_grad: f32,
    /// Stop when `|Δloss|`, `max |t·d|` or the directional derivative fall below this.
    pub tolerance_change: f32,
    /// Curvature pairs kept.
    pub history_size: usize,
    pub line_search: LineSearch,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        LbfgsConfig {
            lr: 1.0,
            max_iter: 20,
            max_eval: None,
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            history_size: 100,
            line_search: LineSearch::None,
        }
    }
}

impl LbfgsConfig {
    /// The evaluation budget per step: `max_eval` or torch's default `max_iter * 5 / 4`.
    pub fn max_eval(&self) -> usize {
        self.max_eval.unwrap_or(self.max_iter * 5 / 4)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad(format!("LBFGS: learning rate {} must be finite and non-negative", self.lr));
        }
        if self.history_size == 0 {
            return bad("LBFGS: history_size must be at least 1".into());
        }
        if !(self.tolerance_grad >= 0.0 && self.tolerance_change >= 0.0) {
            return bad(format!(
                "LBFGS: tolerances must be non-negative (tolerance_grad {}, tolerance_change {})",
                self.tolerance_grad, self.tolerance_change
            ));
        }
        Ok(())
    }
}

/// The loss-and-gradient closure: evaluates the loss at `params` and writes `dloss/dparams` into
/// the second slice (same length).
pub type Closure<'a> = dyn FnMut(&[f32], &mut [f32]) -> Result<f32> + 'a;

/// L-BFGS optimizer state (torch's `state` of the first parameter) and scratch buffers.
#[derive(Clone, Debug)]
pub struct Lbfgs {
    config: LbfgsConfig,
    n: usize,
    /// Total closure evaluations over all steps (torch's `state['func_evals']`).
    func_evals: usize,
    /// Total iterations over all steps (torch's `state['n_iter']`).
    n_iter: usize,
    d: Vec<f32>,
    t: Py,
    old_dirs: VecDeque<Vec<f32>>,
    old_stps: VecDeque<Vec<f32>>,
    ro: VecDeque<f32>,
    h_diag: f32,
    prev_flat_grad: Option<Vec<f32>>,
    prev_loss: Option<f64>,
    // scratch
    al: Vec<f32>,
    x_trial: Vec<f32>,
}

/// Result of one evaluation along the search direction.
struct Eval {
    f: f64,
    g: Vec<f32>,
    gtd: f32,
}

impl Lbfgs {
    pub fn new(config: LbfgsConfig, n_params: usize) -> Result<Self> {
        config.validate()?;
        Ok(Lbfgs {
            al: vec![0.0; config.history_size],
            config,
            n: n_params,
            func_evals: 0,
            n_iter: 0,
            d: Vec::new(),
            t: Py::F64(0.0),
            old_dirs: VecDeque::new(),
            old_stps: VecDeque::new(),
            ro: VecDeque::new(),
            h_diag: 1.0,
            prev_flat_grad: None,
            prev_loss: None,
            x_trial: vec![0.0; n_params],
        })
    }

    pub fn config(&self) -> &LbfgsConfig {
        &self.config
    }

    /// Closure evaluations over all [`step`](Self::step) calls so far (torch's `state['func_evals']`).
    pub fn evaluations(&self) -> usize {
        self.func_evals
    }

    /// Iterations over all [`step`](Self::step) calls so far (torch's `state['n_iter']`).
    pub fn iterations(&self) -> usize {
        self.n_iter
    }

    /// Sets the learning rate for later steps (as editing torch's `param_groups[0]['lr']`).
    pub fn set_lr(&mut self, lr: f32) -> Result<()> {
        let mut config = self.config.clone();
        config.lr = lr;
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// One `optimizer.step(closure)`: returns the loss at the parameters as they were on entry.
    pub fn step(&mut self, params: &mut [f32], closure: &mut Closure<'_>) -> Result<f32> {
        if params.len() != self.n {
            return Err(Error::Shape(format!(
                "LBFGS was created for {} parameters, step got {}",
                self.n,
                params.len()
            )));
        }
        let cfg = self.config.clone();
        let lr = cfg.lr as f64;
        let max_eval = cfg.max_eval();
        let tol_grad = cfg.tolerance_grad;
        let tol_change = cfg.tolerance_change as f64;

        let mut flat_grad = vec![0.0f32; self.n];
        let orig_loss = closure(params, &mut flat_grad)?;
        check_grad_len(&flat_grad, self.n)?;
        let mut loss = orig_loss as f64;
        let mut current_evals = 1usize;
        self.func_evals += 1;

        let mut opt_cond = abs_max(&flat_grad) <= tol_grad;
        if opt_cond || self.n == 0 {
            return Ok(orig_loss);
        }

        let mut n_iter = 0usize;
        while n_iter < cfg.max_iter {
            n_iter += 1;
            self.n_iter += 1;

            self.update_direction(&flat_grad, cfg.history_size);
            match &mut self.prev_flat_grad {
                Some(p) => p.copy_from_slice(&flat_grad),
                None => self.prev_flat_grad = Some(flat_grad.clone()),
            }
            let prev_loss = loss;
            self.prev_loss = Some(prev_loss);

            // ---- step length
            self.t = if self.n_iter == 1 {
                // min(1.0, 1.0 / |g|_1) * lr with the reciprocal a float32 tensor
                let l1: f32 = flat_grad.iter().map(|g| g.abs()).sum();
                Py::min(Py::F64(1.0), Py::F32(1.0 / l1)) * Py::F64(lr)
            } else {
                Py::F64(lr)
            };

            let gtd = dot(&flat_grad, &self.d);
            if gtd > -(tol_change as f32) {
                break;
            }

            let mut ls_func_evals = 0usize;
            match cfg.line_search {
                LineSearch::StrongWolfe => {
                    let max_ls = max_eval.saturating_sub(current_evals);
                    let (f_new, g_new, t, evals) =
                        self.strong_wolfe(params, closure, self.t, loss, &flat_grad, gtd, max_ls)?;
                    loss = f_new;
                    flat_grad = g_new;
                    self.t = t;
                    ls_func_evals = evals;
                    axpy(params, self.t.f32(), &self.d);
                    opt_cond = abs_max(&flat_grad) <= tol_grad;
                }
                LineSearch::None => {
                    axpy(params, self.t.f32(), &self.d);
                    if n_iter != cfg.max_iter {
                        loss = closure(params, &mut flat_grad)? as f64;
                        check_grad_len(&flat_grad, self.n)?;
                        opt_cond = abs_max(&flat_grad) <= tol_grad;
                        ls_func_evals = 1;
                    }
                }
            }
            current_evals += ls_func_evals;
            self.func_evals += ls_func_evals;

            // ---- stopping rules
            if n_iter == cfg.max_iter || current_evals >= max_eval || opt_cond {
                break;
            }
            let t32 = self.t.f32();
            if self.d.iter().map(|d| (d * t32).abs()).fold(0.0f32, f32::max) <= tol_change as f32 {
                break;
            }
            if (loss - prev_loss).abs() < tol_change {
                break;
            }
        }
        Ok(orig_loss)
    }

    /// The search direction `d` for gradient `flat_grad`: steepest descent on the first
    /// iteration, else the history update (a curvature pair when `y·s > 1e-10`, at most
    /// `history_size` kept) and torch's two-loop recursion.
    fn update_direction(&mut self, flat_grad: &[f32], history_size: usize) {
        if self.n_iter == 1 {
            self.d = flat_grad.iter().map(|g| -g).collect();
            self.old_dirs.clear();
            self.old_stps.clear();
            self.ro.clear();
            self.h_diag = 1.0;
            return;
        }
        let prev = self.prev_flat_grad.as_ref().expect("prev_flat_grad is set after the first iteration");
        let y: Vec<f32> = flat_grad.iter().zip(prev).map(|(g, p)| g - p).collect();
        let t32 = self.t.f32();
        let s: Vec<f32> = self.d.iter().map(|d| d * t32).collect();
        let ys = dot(&y, &s);
        if ys > 1e-10 {
            if self.old_dirs.len() == history_size {
                self.old_dirs.pop_front();
                self.old_stps.pop_front();
                self.ro.pop_front();
            }
            self.h_diag = ys / dot(&y, &y);
            self.old_dirs.push_back(y);
            self.old_stps.push_back(s);
            self.ro.push_back(1.0 / ys);
        }

        // two-loop recursion
        let num_old = self.old_dirs.len();
        let mut q: Vec<f32> = flat_grad.iter().map(|g| -g).collect();
        for i in (0..num_old).rev() {
            let al = dot(&self.old_stps[i], &q) * self.ro[i];
            self.al[i] = al;
            axpy(&mut q, -al, &self.old_dirs[i]);
        }
        let h = self.h_diag;
        for v in q.iter_mut() {
            *v *= h;
        }
        for i in 0..num_old {
            let be_i = dot(&self.old_dirs[i], &q) * self.ro[i];
            axpy(&mut q, self.al[i] - be_i, &self.old_stps[i]);
        }
        self.d = q;
    }

    /// Loss and gradient at `x + t·d` (torch's `_directional_evaluate`), `x` left unchanged.
    fn eval_at(&mut self, x: &[f32], t: Py, closure: &mut Closure<'_>) -> Result<Eval> {
        let t32 = t.f32();
        for ((xt, &xi), &di) in self.x_trial.iter_mut().zip(x).zip(&self.d) {
            *xt = di.mul_add(t32, xi);
        }
        let mut g = vec![0.0f32; self.n];
        let f = closure(&self.x_trial, &mut g)? as f64;
        check_grad_len(&g, self.n)?;
        let gtd = dot(&g, &self.d);
        Ok(Eval { f, g, gtd })
    }

    /// torch's `_strong_wolfe` (c1 = 1e-4, c2 = 0.9, tolerance_change = 1e-9: torch does not pass
    /// its own). Returns `(f, g, t, evaluations)` at the accepted step.
    #[allow(clippy::too_many_arguments)]
    fn strong_wolfe(
        &mut self,
        x: &[f32],
        closure: &mut Closure<'_>,
        t: Py,
        f: f64,
        g: &[f32],
        gtd: f32,
        max_ls: usize,
    ) -> Result<(f64, Vec<f32>, Py, usize)> {
        // Python floats: F64, 0-dim float32 tensors: F32 (losses are floats, gtd tensors)
        let w = Wolfe { f: Py::F64(f), gtd: Py::F32(gtd), c1: Py::F64(1e-4), c2: Py::F64(0.9) };
        let mut search = self.bracket(x, closure, &w, t, g, max_ls)?;
        let low = self.zoom(x, closure, &w, &mut search, max_ls)?;
        let g_out = std::mem::take(&mut search.g[low]);
        Ok((search.f[low].f64(), g_out, search.t[low], search.evals))
    }

    /// The bracketing phase of the strong-Wolfe search from step `t`: extrapolate until an
    /// interval holds a point that satisfies the conditions (or one does outright: `done`).
    fn bracket(
        &mut self,
        x: &[f32],
        closure: &mut Closure<'_>,
        w: &Wolfe,
        mut t: Py,
        g: &[f32],
        max_ls: usize,
    ) -> Result<LineSearchState> {
        let mut new = self.eval_at(x, t, closure)?;
        let mut evals = 1usize;
        let (mut t_prev, mut f_prev, mut g_prev, mut gtd_prev) = (Py::F64(0.0), w.f, g.to_vec(), w.gtd);
        let mut ls_iter = 0usize;
        while ls_iter < max_ls {
            let (f_new, gtd_new) = (Py::F64(new.f), Py::F32(new.gtd));
            let state = |t2: [Py; 2], f2: [Py; 2], g2: [Vec<f32>; 2], gtd2: [Py; 2], done: bool| LineSearchState {
                t: t2,
                f: f2,
                g: g2,
                gtd: gtd2,
                done,
                ls_iter,
                evals,
            };
            if f_new.gt(w.armijo(t)) || (ls_iter > 1 && f_new.ge(f_prev)) {
                let g2 = [g_prev, std::mem::take(&mut new.g)];
                return Ok(state([t_prev, t], [f_prev, f_new], g2, [gtd_prev, gtd_new], false));
            }
            if w.curvature(gtd_new) {
                let g2 = [new.g.clone(), std::mem::take(&mut new.g)];
                return Ok(state([t, t], [f_new, f_new], g2, [Py::F32(0.0); 2], true));
            }
            if gtd_new.ge(Py::F64(0.0)) {
                let g2 = [g_prev, std::mem::take(&mut new.g)];
                return Ok(state([t_prev, t], [f_prev, f_new], g2, [gtd_prev, gtd_new], false));
            }

            // extrapolate
            let min_step = t + Py::F64(0.01) * (t - t_prev);
            let max_step = t * Py::F64(10.0);
            let tmp = t;
            t = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, Some((min_step, max_step)));

            t_prev = tmp;
            f_prev = f_new;
            g_prev = std::mem::take(&mut new.g);
            gtd_prev = gtd_new;
            new = self.eval_at(x, t, closure)?;
            evals += 1;
            ls_iter += 1;
        }
        // ls_iter == max_ls; torch leaves bracket_gtd as it was, the zoom never runs
        Ok(LineSearchState {
            t: [Py::F64(0.0), t],
            f: [w.f, Py::F64(new.f)],
            g: [g.to_vec(), new.g],
            gtd: [Py::F32(0.0); 2],
            done: false,
            ls_iter,
            evals,
        })
    }

    /// The zoom phase: shrink the bracket by cubic interpolation until a point satisfies the
    /// strong-Wolfe conditions, the evaluations run out or the bracket is too small. Returns the
    /// index of the low (best) end.
    fn zoom(
        &mut self,
        x: &[f32],
        closure: &mut Closure<'_>,
        w: &Wolfe,
        s: &mut LineSearchState,
        max_ls: usize,
    ) -> Result<usize> {
        let tol_change = Py::F64(1e-9);
        let d_norm = Py::F32(abs_max(&self.d));
        let mut insuf_progress = false;
        let order = |bf: &[Py; 2]| if bf[0].le(bf[1]) { (0, 1) } else { (1, 0) };
        let (mut low, mut high) = order(&s.f);
        while !s.done && s.ls_iter < max_ls {
            if ((s.t[1] - s.t[0]).abs() * d_norm).lt(tol_change) {
                break;
            }
            let mut t = cubic_interpolate(s.t[0], s.f[0], s.gtd[0], s.t[1], s.f[1], s.gtd[1], None);

            let b_max = Py::max(s.t[0], s.t[1]);
            let b_min = Py::min(s.t[0], s.t[1]);
            let eps = Py::F64(0.1) * (b_max - b_min);
            if Py::min(b_max - t, t - b_min).lt(eps) {
                if insuf_progress || t.ge(b_max) || t.le(b_min) {
                    t = if (t - b_max).abs().lt((t - b_min).abs()) { b_max - eps } else { b_min + eps };
                    insuf_progress = false;
                } else {
                    insuf_progress = true;
                }
            } else {
                insuf_progress = false;
            }

            let new = self.eval_at(x, t, closure)?;
            s.evals += 1;
            s.ls_iter += 1;
            let (f_new, gtd_new) = (Py::F64(new.f), Py::F32(new.gtd));

            if f_new.gt(w.armijo(t)) || f_new.ge(s.f[low]) {
                (s.t[high], s.f[high], s.g[high], s.gtd[high]) = (t, f_new, new.g, gtd_new);
                (low, high) = order(&s.f);
            } else {
                if w.curvature(gtd_new) {
                    s.done = true;
                } else if (gtd_new * (s.t[high] - s.t[low])).ge(Py::F64(0.0)) {
                    // old high becomes new low
                    s.t[high] = s.t[low];
                    s.f[high] = s.f[low];
                    s.gtd[high] = s.gtd[low];
                    s.g.swap(high, low);
                }
                (s.t[low], s.f[low], s.g[low], s.gtd[low]) = (t, f_new, new.g, gtd_new);
            }
        }
        Ok(low)
    }
}

/// The strong-Wolfe conditions at the start of a line search (loss `f`, directional derivative
/// `gtd`).
struct Wolfe {
    f: Py,
    gtd: Py,
    c1: Py,
    c2: Py,
}

impl Wolfe {
    /// Sufficient decrease: the loss bound at step `t`.
    fn armijo(&self, t: Py) -> Py {
        self.f + self.c1 * t * self.gtd
    }

    /// The curvature condition `|gtd_new| <= -c2·gtd`.
    fn curvature(&self, gtd_new: Py) -> bool {
        gtd_new.abs().le(-self.c2 * self.gtd)
    }
}

/// The line search's bracket — two steps with their losses, gradients and directional
/// derivatives — and its progress.
struct LineSearchState {
    t: [Py; 2],
    f: [Py; 2],
    g: [Vec<f32>; 2],
    gtd: [Py; 2],
    /// A point satisfying both conditions was found.
    done: bool,
    ls_iter: usize,
    evals: usize,
}

/// torch's `_cubic_interpolate`: minimiser of the cubic through `(x1, f1, g1)` and `(x2, f2, g2)`,
/// clamped to `bounds` (default: the interval between the points), with torch's mix of Python
/// floats and float32 tensors.
fn cubic_interpolate(x1: Py, f1: Py, g1: Py, x2: Py, f2: Py, g2: Py, bounds: Option<(Py, Py)>) -> Py {
    let (lo, hi) = bounds.unwrap_or(if x1.le(x2) { (x1, x2) } else { (x2, x1) });
    let three = Py::F64(3.0);
    let two = Py::F64(2.0);
    let d1 = g1 + g2 - three * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square.ge(Py::F64(0.0)) {
        let d2 = d2_square.sqrt();
        let min_pos = if x1.le(x2) {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + two * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + two * d2))
        };
        Py::min(Py::max(min_pos, lo), hi)
    } else {
        (lo + hi) / two
    }
}

/// A scalar as torch's L-BFGS holds it: a Python float (`F64`) or a 0-dim float32 tensor (`F32`).
/// Mixed arithmetic and comparisons cast the float to f32 and work in f32, as ATen does with a
/// wrapped Python number; `min`/`max` return one of their arguments unchanged, as Python's do.
#[derive(Clone, Copy, Debug)]
enum Py {
    F64(f64),
    F32(f32),
}

impl Py {
    fn f64(self) -> f64 {
        match self {
            Py::F64(v) => v,
            Py::F32(v) => v as f64,
        }
    }

    fn f32(self) -> f32 {
        match self {
            Py::F64(v) => v as f32,
            Py::F32(v) => v,
        }
    }

    fn cmp_op(self, o: Py, op64: fn(&f64, &f64) -> bool, op32: fn(&f32, &f32) -> bool) -> bool {
        match (self, o) {
            (Py::F64(a), Py::F64(b)) => op64(&a, &b),
            _ => op32(&self.f32(), &o.f32()),
        }
    }

    fn lt(self, o: Py) -> bool {
        self.cmp_op(o, f64::lt, f32::lt)
    }

    fn le(self, o: Py) -> bool {
        self.cmp_op(o, f64::le, f32::le)
    }

    fn gt(self, o: Py) -> bool {
        self.cmp_op(o, f64::gt, f32::gt)
    }

    fn ge(self, o: Py) -> bool {
        self.cmp_op(o, f64::ge, f32::ge)
    }

    /// Python's `min(a, b)`: `b` if `b < a`, else `a`.
    fn min(a: Py, b: Py) -> Py {
        if b.lt(a) { b } else { a }
    }

    /// Python's `max(a, b)`: `b` if `b > a`, else `a`.
    fn max(a: Py, b: Py) -> Py {
        if b.gt(a) { b } else { a }
    }

    fn abs(self) -> Py {
        match self {
            Py::F64(v) => Py::F64(v.abs()),
            Py::F32(v) => Py::F32(v.abs()),
        }
    }

    fn sqrt(self) -> Py {
        match self {
            Py::F64(v) => Py::F64(v.sqrt()),
            Py::F32(v) => Py::F32(v.sqrt()),
        }
    }

    fn bin(self, o: Py, op64: fn(f64, f64) -> f64, op32: fn(f32, f32) -> f32) -> Py {
        match (self, o) {
            (Py::F64(a), Py::F64(b)) => Py::F64(op64(a, b)),
            _ => Py::F32(op32(self.f32(), o.f32())),
        }
    }
}

macro_rules! py_op {
    ($tr:ident, $m:ident, $op:tt) => {
        impl std::ops::$tr for Py {
            type Output = Py;
            fn $m(self, o: Py) -> Py {
                self.bin(o, |a, b| a $op b, |a, b| a $op b)
            }
        }
    };
}
py_op!(Add, add, +);
py_op!(Sub, sub, -);
py_op!(Mul, mul, *);
py_op!(Div, div, /);

impl std::ops::Neg for Py {
    type Output = Py;
    fn neg(self) -> Py {
        match self {
            Py::F64(v) => Py::F64(-v),
            Py::F32(v) => Py::F32(-v),
        }
    }
}

fn check_grad_len(g: &[f32], n: usize) -> Result<()> {
    if g.len() != n {
        return Err(Error::Shape(format!("LBFGS closure wrote a gradient of {} values for {n} parameters", g.len())));
    }
    Ok(())
}

fn abs_max(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// f32 dot product, summed in order in f32.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |s, (&x, &y)| s + x * y)
}

/// `y += alpha·x` fused per element, as ATen's `add_(x, alpha=alpha)` on the CPU.
fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = xi.mul_add(alpha, *yi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_interpolate_minimum_of_quadratic() {
        // f = (x - 1)^2 from x1 = 0 (f 1, g -2) and x2 = 3 (f 4, g 4): minimum at 1
        let t = cubic_interpolate(
            Py::F64(0.0),
            Py::F64(1.0),
            Py::F32(-2.0),
            Py::F64(3.0),
            Py::F64(4.0),
            Py::F32(4.0),
            None,
        );
        assert!((t.f64() - 1.0).abs() < 1e-6, "{t:?}");
    }

    #[test]
    fn rejects_bad_config_and_shapes() {
        assert!(Lbfgs::new(LbfgsConfig { history_size: 0, ..Default::default() }, 2).is_err());
        assert!(Lbfgs::new(LbfgsConfig { lr: -1.0, ..Default::default() }, 2).is_err());
        let mut opt = Lbfgs::new(LbfgsConfig::default(), 2).unwrap();
        let mut p = [0.0f32; 3];
        assert!(opt.step(&mut p, &mut |_, _| Ok(0.0)).is_err());
    }
}
