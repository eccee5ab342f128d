//! Times as the host writes them: .NET's round-trip UTC format, and Service Bus dates to the
//! second (docs/PROTOCOL.md).

use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// .NET's round-trip format for a UTC `DateTime` (`"o"`): seven fractional digits and `Z`.
const DOTNET_UTC: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z");
/// How Service Bus dates reach the handler's Metadata: to the second, no zone (docs/PROTOCOL.md).
const TO_THE_SECOND: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
/// A UTC time in .NET's round-trip format.
pub(crate) fn dotnet_utc(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(DOTNET_UTC)
        .unwrap_or_default()
}

/// A UTC time to the second, without zone.
pub(crate) fn to_the_second(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(TO_THE_SECOND)
        .unwrap_or_default()
}
