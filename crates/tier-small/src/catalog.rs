//! What this build can deploy, for the deploy engine: every resource of the extra-small and
//! small tiers, shaped for the target tier.

use tier_xs::ops::{Catalog, Universe, UniverseContext};
use tier_xs::tier::ExtraSmall;
use tier_xs::workspace::Tier;

use crate::tier::{Small, SmallOwn, SmallSettings};

/// The remembered setting holding `--certificate-arn`.
pub const SETTING_CERTIFICATE: &str = "certificate_arn";

/// The extra-small and small tiers.
pub struct SmallCatalog;

impl Catalog for SmallCatalog {
    fn highest(&self) -> Tier {
        Tier::Small
    }

    fn universe(&self, ctx: &UniverseContext<'_>) -> Universe {
        let settings = SmallSettings {
            plain_http: ctx.plain_http,
            certificate_arn: ctx
                .settings
                .values
                .get(SETTING_CERTIFICATE)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        };
        if ctx.target.is_some_and(|t| t >= Tier::Small) {
            let small = Small::new(ctx.ws, &ctx.xs, &settings);
            Universe {
                resources: small.resources(),
                problems: small.problems(),
            }
        } else {
            // Below small (a downgrade, or destroy): the extra-small tier as it is on its
            // own, and the small resources so the plan can find and remove (or keep) them.
            let xs = ExtraSmall::new(ctx.ws, &ctx.xs);
            let mut resources = xs.resources();
            resources.extend(SmallOwn::new(ctx.ws, &ctx.xs, &settings).resources());
            Universe {
                resources,
                problems: xs.problems,
            }
        }
    }
}
