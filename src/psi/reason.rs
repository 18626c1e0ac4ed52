//! Why a pixel has no height: the codes of a reason mask, `(H, W)` u8, one per pixel. The solver
//! writes them beside its NaN pixels (`infer --mask`), the generator writes what a solver should
//! do with each pixel of the frame it made (`generate --truth-mask`), and `eval --reasons` counts
//! the prediction's pixels per code.

/// A pixel's reason code (u8 on disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Reason {
    /// A height can be measured.
    Ok = 0,
    /// Too little fringe modulation B (a dark spot, no interference).
    LowModulation = 1,
    /// Buckets clipped at the type's range, in too many lasers to decide the fringe order.
    Saturated = 2,
    /// A NaN or infinite bucket value.
    NonFiniteInput = 3,
    /// The lasers' phases do not decide the fringe order.
    OrderUnresolved = 4,
}

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Reason; 5] =
        [Reason::Ok, Reason::LowModulation, Reason::Saturated, Reason::NonFiniteInput, Reason::OrderUnresolved];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// The reason of `code`, if it is one.
    pub fn from_code(code: u8) -> Option<Reason> {
        Reason::ALL.get(code as usize).copied()
    }

    /// The name in reports and JSON: `ok`, `low_modulation`, `saturated`, `non_finite_input`,
    /// `order_unresolved`.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::LowModulation => "low_modulation",
            Reason::Saturated => "saturated",
            Reason::NonFiniteInput => "non_finite_input",
            Reason::OrderUnresolved => "order_unresolved",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.code() as usize, i);
            assert_eq!(Reason::from_code(r.code()), Some(*r));
        }
        assert_eq!(Reason::from_code(5), None);
        assert_eq!(Reason::Saturated.name(), "saturated");
    }
}
