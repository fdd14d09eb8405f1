//! A deterministic synthetic registry extract for demos, development and load
//! runs: citizens, the parcels they hold and the enterprises they run, written
//! as proto3-JSON lines (`citizens.jsonl`, `parcels.jsonl`, `enterprises.jsonl`)
//! ready for `registry::import`.
//!
//! The same `citizens` count always gives byte-identical files: a fixed-seed
//! splitmix64, no clock, and no iteration over hashed collections. Every record
//! passes [`crate::registry::validate`], and cross-references hold (holders and
//! legal representatives are citizens or enterprises of the same extract, with
//! the same names). Records stream out as they are made, so memory stays small
//! except for the set of personal ids issued (for uniqueness).
//!
//! Everyone and everything here is invented. The commune codes are
//! illustrative: five digits in the right numeric range for their province,
//! but not checked against the official post-2025 list *(verify before using
//! them as real codes)*.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde::Serialize;

use crate::domain::{admin, calendar, enterprise_code, personal_id};
use crate::proto::business::v1::{
    BusinessLine, Enterprise, EnterpriseStatus, EnterpriseType, Representative,
};
use crate::proto::citizen::v1::{Citizen, IdCard, Sex};
use crate::proto::common::v1::{Address, Date};
use crate::proto::land::v1::{
    Certificate, Encumbrance, Holder, HolderKind, LandUse, Parcel, ParcelRef,
};

/// A citizen every extract holds, whatever its size: the first one made
/// (a living adult, head of a household in Cần Thơ). The docs' examples use
/// it, so they answer with data against a fresh dev gateway.
pub const WELL_KNOWN_CITIZEN: &str = "092302441037";
/// Their full name, as the examples print it.
pub const WELL_KNOWN_CITIZEN_NAME: &str = "Đặng Thị Anh";
/// An enterprise the dev extract and the default `demo-data` extract hold:
/// the first one made (smaller extracts plan fewer enterprises and may
/// start with another).
pub const WELL_KNOWN_ENTERPRISE: &str = "1801500020";
/// A parcel every extract of two or more citizens holds, as
/// `commune/map_sheet/parcel_number`.
pub const WELL_KNOWN_PARCEL: &str = "31120/1/1";

/// How many records of each registry an extract holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemoSummary {
    /// Lines of `citizens.jsonl`.
    pub citizens: usize,
    /// Lines of `parcels.jsonl`.
    pub parcels: usize,
    /// Lines of `enterprises.jsonl` (branches included).
    pub enterprises: usize,
}

/// Writes a synthetic extract of `citizens` citizens, about one parcel per two
/// citizens and one enterprise per ten (at least one when there are citizens)
/// into `out_dir`, creating it. Existing files of the same names are replaced.
pub fn write_extract(out_dir: &Path, citizens: usize) -> io::Result<DemoSummary> {
    fs::create_dir_all(out_dir)?;
    let open = |name: &str| File::create(out_dir.join(name)).map(BufWriter::new);
    let mut out = Outputs {
        citizens: open("citizens.jsonl")?,
        parcels: open("parcels.jsonl")?,
        enterprises: open("enterprises.jsonl")?,
    };
    let mut generator = Generator::new();
    let summary = generator.run(citizens, &mut out)?;
    out.citizens.flush()?;
    out.parcels.flush()?;
    out.enterprises.flush()?;
    Ok(summary)
}

struct Outputs {
    citizens: BufWriter<File>,
    parcels: BufWriter<File>,
    enterprises: BufWriter<File>,
}

fn write_line<T: Serialize>(w: &mut impl Write, record: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *w, record)?;
    w.write_all(b"\n")
}

// ---------------------------------------------------------------------------
// Randomness and dates
// ---------------------------------------------------------------------------

/// The generator's fixed seed: changing it changes every extract.
const SEED: u64 = 0x0092_2025_0701_0001;

/// splitmix64: tiny, fast, and good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0), by multiply-shift.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `per_mille`/1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        // Only ever called on non-empty const tables (checked by a test).
        &items[self.below(items.len() as u64) as usize]
    }

    fn weighted<'a, T>(&mut self, items: &'a [(T, u32)]) -> &'a T {
        &items[self.weighted_index(items)].0
    }

    /// An index into `items` (non-empty), drawn in proportion to the weights.
    fn weighted_index<T>(&mut self, items: &[(T, u32)]) -> usize {
        let total: u64 = items.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut r = self.below(total.max(1));
        for (i, (_, w)) in items.iter().enumerate() {
            if r < u64::from(*w) {
                return i;
            }
            r -= u64::from(*w);
        }
        items.len() - 1
    }

    /// A day number uniform in `lo..=hi`.
    fn day_between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

/// The extract's as-of date: nobody is born, dies or registers anything later.
const AS_OF: (i32, u32, u32) = (2025, 10, 1);

fn days(y: i32, m: u32, d: u32) -> i64 {
    calendar::to_days(y, m, d)
}

fn as_of() -> i64 {
    days(AS_OF.0, AS_OF.1, AS_OF.2)
}

/// The same calendar day `years` later (28 February for a 29 February that
/// lands in a common year).
fn add_years(day: i64, years: i32) -> i64 {
    let (y, m, d) = calendar::from_days(day);
    let y = y + years;
    let d = if m == 2 && d == 29 && !calendar::is_leap_year(y) {
        28
    } else {
        d
    };
    days(y, m, d)
}

fn date(day: i64) -> Date {
    let (year, month, d) = calendar::from_days(day);
    Date {
        year,
        month: month as i32,
        day: d as i32,
    }
}

// ---------------------------------------------------------------------------
// Data tables
// ---------------------------------------------------------------------------

struct Commune {
    code: &'static str,
    name: &'static str,
    province: &'static str,
    urban: bool,
}

const fn commune(
    code: &'static str,
    name: &'static str,
    province: &'static str,
    urban: bool,
) -> Commune {
    Commune {
        code,
        name,
        province,
        urban,
    }
}

/// Communes by current province. Illustrative codes (see the module doc).
const COMMUNES: &[Commune] = &[
    // Cần Thơ, including the former Hậu Giang and Sóc Trăng.
    commune("31117", "Phường Ninh Kiều", "92", true),
    commune("31120", "Phường Cái Khế", "92", true),
    commune("31135", "Phường Tân An", "92", true),
    commune("31147", "Phường An Bình", "92", true),
    commune("31150", "Phường Bình Thủy", "92", true),
    commune("31153", "Phường Long Tuyền", "92", true),
    commune("31174", "Phường Cái Răng", "92", true),
    commune("31186", "Phường Hưng Phú", "92", true),
    commune("31207", "Phường Ô Môn", "92", true),
    commune("31228", "Phường Thốt Nốt", "92", true),
    commune("31261", "Xã Thới Lai", "92", false),
    commune("31282", "Xã Cờ Đỏ", "92", false),
    commune("31299", "Xã Phong Điền", "92", false),
    commune("31309", "Xã Nhơn Ái", "92", false),
    commune("31321", "Phường Vị Thanh", "92", true),
    commune("31340", "Phường Ngã Bảy", "92", true),
    commune("31411", "Xã Phụng Hiệp", "92", false),
    commune("31507", "Phường Sóc Trăng", "92", true),
    commune("31510", "Phường Phú Lợi", "92", true),
    commune("31570", "Xã Mỹ Xuyên", "92", false),
    commune("31669", "Xã Trần Đề", "92", false),
    // Hà Nội.
    commune("00004", "Phường Ba Đình", "01", true),
    commune("00008", "Phường Ngọc Hà", "01", true),
    commune("00025", "Phường Giảng Võ", "01", true),
    commune("00070", "Phường Hoàn Kiếm", "01", true),
    commune("00082", "Phường Cửa Nam", "01", true),
    // Hồ Chí Minh City.
    commune("26734", "Phường Tân Định", "79", true),
    commune("26740", "Phường Sài Gòn", "79", true),
    commune("26743", "Phường Bến Thành", "79", true),
    commune("26758", "Phường Cầu Ông Lãnh", "79", true),
    // An Giang, including the former Kiên Giang.
    commune("30280", "Phường Long Xuyên", "91", true),
    commune("30316", "Phường Châu Đốc", "91", true),
    commune("30505", "Xã Chợ Mới", "91", false),
    commune("30889", "Phường Rạch Giá", "91", true),
    // Vĩnh Long, including the former Bến Tre and Trà Vinh.
    commune("28756", "Phường An Hội", "86", true),
    commune("29242", "Phường Trà Vinh", "86", true),
    commune("29551", "Phường Thanh Đức", "86", true),
    commune("29590", "Phường Long Châu", "86", true),
    commune("29689", "Xã Tam Bình", "86", false),
];

/// Where people live, weighted towards Cần Thơ.
const RESIDENCE: &[(&str, u32)] = &[("92", 70), ("79", 12), ("01", 8), ("91", 5), ("86", 5)];

/// Province codes of birth registration (pre-2025, three digits) for people
/// living in each current province: mostly local, some from neighbours.
const BIRTH_CODES: &[(&str, &[(&str, u32)])] = &[
    (
        "92",
        &[
            ("092", 62),
            ("094", 12),
            ("093", 10),
            ("089", 3),
            ("091", 3),
            ("086", 3),
            ("087", 2),
            ("079", 3),
            ("001", 2),
        ],
    ),
    (
        "79",
        &[
            ("079", 60),
            ("092", 5),
            ("052", 5),
            ("040", 5),
            ("075", 5),
            ("001", 5),
            ("083", 5),
            ("074", 5),
            ("077", 5),
        ],
    ),
    (
        "01",
        &[
            ("001", 75),
            ("036", 5),
            ("034", 5),
            ("038", 5),
            ("040", 5),
            ("030", 5),
        ],
    ),
    ("91", &[("089", 50), ("091", 40), ("092", 10)]),
    ("86", &[("086", 55), ("083", 20), ("084", 20), ("092", 5)]),
];

const STREETS: &[&str] = &[
    "30 Tháng 4",
    "3 Tháng 2",
    "Mậu Thân",
    "Trần Hưng Đạo",
    "Nguyễn Trãi",
    "Lê Lợi",
    "Hai Bà Trưng",
    "Lý Thường Kiệt",
    "Nguyễn Huệ",
    "Hùng Vương",
    "Cách Mạng Tháng Tám",
    "Trần Phú",
    "Nguyễn Văn Cừ",
    "Nguyễn Văn Linh",
    "Phan Đình Phùng",
    "Lý Tự Trọng",
    "Hòa Bình",
    "Võ Văn Kiệt",
];

const HAMLETS: &[&str] = &[
    "Ấp Thới Hòa",
    "Ấp Phú Lợi",
    "Ấp Tân Lập",
    "Ấp An Thạnh",
    "Ấp Mỹ Phước",
    "Ấp Long Hòa",
    "Ấp Bình Thạnh",
    "Ấp Hòa Lợi",
    "Ấp Trường Thọ",
    "Ấp Nhơn Lộc",
];

const MEKONG_ETHNICITIES: &[(&str, u32)] =
    &[("Kinh", 900), ("Khmer", 60), ("Hoa", 30), ("Chăm", 10)];
const OTHER_ETHNICITIES: &[(&str, u32)] = &[("Kinh", 970), ("Hoa", 30)];

const KINH_FAMILIES: &[(&str, u32)] = &[
    ("Nguyễn", 31),
    ("Trần", 11),
    ("Lê", 9),
    ("Phạm", 7),
    ("Huỳnh", 5),
    ("Võ", 5),
    ("Phan", 4),
    ("Hoàng", 3),
    ("Vũ", 2),
    ("Đặng", 2),
    ("Bùi", 2),
    ("Hồ", 2),
    ("Trương", 2),
    ("Đỗ", 1),
    ("Ngô", 1),
    ("Dương", 1),
    ("Lý", 1),
    ("Lâm", 1),
    ("Đinh", 1),
    ("Mai", 1),
    ("Cao", 1),
    ("Tô", 1),
];
const KHMER_FAMILIES: &[(&str, u32)] = &[
    ("Thạch", 30),
    ("Danh", 25),
    ("Sơn", 20),
    ("Kim", 10),
    ("Lâm", 10),
    ("Châu", 5),
];
const HOA_FAMILIES: &[(&str, u32)] = &[
    ("Lâm", 20),
    ("Lý", 15),
    ("Quách", 10),
    ("Trương", 15),
    ("Tăng", 10),
    ("Hứa", 10),
    ("Mã", 10),
    ("La", 10),
];
const CHAM_FAMILIES: &[(&str, u32)] = &[("Đàng", 30), ("Châu", 25), ("Lưu", 25), ("Từ", 20)];

const FEMALE_MIDDLE: &[(&str, u32)] = &[
    ("Thị", 50),
    ("Ngọc", 10),
    ("Thu", 5),
    ("Thanh", 5),
    ("Kim", 5),
    ("Mỹ", 5),
    ("Bích", 4),
    ("Hồng", 4),
    ("Thùy", 4),
    ("Phương", 4),
    ("Bảo", 2),
];
const MALE_MIDDLE: &[(&str, u32)] = &[
    ("Văn", 40),
    ("Minh", 10),
    ("Hữu", 8),
    ("Đức", 8),
    ("Quốc", 8),
    ("Thanh", 6),
    ("Công", 5),
    ("Hoàng", 5),
    ("Gia", 5),
    ("Tấn", 5),
];
const FEMALE_GIVEN: &[&str] = &[
    "Lan", "Hoa", "Hương", "Mai", "Linh", "Trang", "Thảo", "Hạnh", "Nhung", "Phương", "Yến", "Vy",
    "Anh", "Hà", "Trinh", "Diễm", "Thủy", "Tuyết", "Hằng", "Nhi", "Quyên", "Ngân", "My", "Uyên",
    "Thư", "Loan", "Liên", "Dung", "Thúy", "Hiền", "Oanh", "Châu", "Ngọc", "Trâm", "Hân", "Tiên",
    "Như", "Giang",
];
const MALE_GIVEN: &[&str] = &[
    "Hùng", "Dũng", "Minh", "Tuấn", "Hải", "Long", "Nam", "Phúc", "Khoa", "Tài", "Trung", "Thành",
    "Sơn", "Quang", "Huy", "Bảo", "Khang", "Phong", "Tâm", "Toàn", "Lộc", "Thắng", "Nghĩa", "Hiếu",
    "Đạt", "Vinh", "Cường", "Hòa", "Tú", "Kiệt", "Nhân", "Thịnh", "Duy", "Khánh", "Hoàng", "Tín",
    "Trí", "Lâm",
];

const NATIONALITY: &str = "Việt Nam";
const ID_CARD_ISSUER: &str = "Cục Cảnh sát quản lý hành chính về trật tự xã hội";

const BANKS: &[&str] = &[
    "Ngân hàng TMCP Ngoại thương Việt Nam",
    "Ngân hàng Nông nghiệp và Phát triển Nông thôn Việt Nam",
    "Ngân hàng TMCP Công Thương Việt Nam",
    "Ngân hàng TMCP Đầu tư và Phát triển Việt Nam",
    "Ngân hàng TMCP Sài Gòn Thương Tín",
    "Ngân hàng TMCP Á Châu",
];
const MORTGAGES: &[(&str, u32)] = &[
    ("Thế chấp quyền sử dụng đất", 70),
    ("Thế chấp quyền sử dụng đất và tài sản gắn liền với đất", 30),
];

/// Letter pairs of certificate serials; the forms since August 2024 start a
/// new series.
const SERIES_SINCE_2024: &[&str] = &["AA", "AB", "AC", "AD"];
const SERIES_LEGACY: &[&str] = &[
    "BA", "BB", "BC", "BD", "BE", "BG", "BH", "BK", "BL", "BM", "BN", "BO", "BP", "BQ", "BR", "BS",
    "BT", "BU", "BV", "BX", "BY", "CA", "CB", "CC", "CD", "CE", "CH", "CK", "CL", "CM", "CN", "CO",
    "CP", "CQ", "CR", "CS", "CT", "CU", "CV", "CX", "CY", "DA", "DB", "DC", "DD", "DE",
];

struct Sector {
    vi: &'static str,
    en: &'static str,
    /// Whether its premises are production land (SKC) rather than commerce (TMD).
    industrial: bool,
    /// VSIC 2018 lines; the first is the main one.
    lines: &'static [(&'static str, &'static str)],
}

const SECTORS: &[Sector] = &[
    Sector {
        vi: "Thương mại Dịch vụ",
        en: "TRADING SERVICES",
        industrial: false,
        lines: &[
            ("4690", "Bán buôn tổng hợp"),
            ("4711", "Bán lẻ lương thực, thực phẩm, đồ uống, thuốc lá, thuốc lào chiếm tỷ trọng lớn trong các cửa hàng kinh doanh tổng hợp"),
            ("8299", "Hoạt động dịch vụ hỗ trợ kinh doanh khác còn lại chưa được phân vào đâu"),
        ],
    },
    Sector {
        vi: "Xây dựng",
        en: "CONSTRUCTION",
        industrial: false,
        lines: &[
            ("4101", "Xây dựng nhà để ở"),
            ("4102", "Xây dựng nhà không để ở"),
            ("4212", "Xây dựng công trình đường bộ"),
            ("4663", "Bán buôn vật liệu, thiết bị lắp đặt khác trong xây dựng"),
        ],
    },
    Sector {
        vi: "Thủy sản",
        en: "SEAFOOD",
        industrial: true,
        lines: &[
            ("1020", "Chế biến, bảo quản thủy sản và các sản phẩm từ thủy sản"),
            ("0322", "Nuôi trồng thủy sản nội địa"),
            ("4632", "Bán buôn thực phẩm"),
        ],
    },
    Sector {
        vi: "Lương thực",
        en: "FOOD",
        industrial: true,
        lines: &[
            ("10611", "Xay xát"),
            ("4631", "Bán buôn gạo, lúa mỳ, hạt ngũ cốc khác, bột mỳ"),
            ("5210", "Kho bãi và lưu giữ hàng hóa"),
        ],
    },
    Sector {
        vi: "Vận tải",
        en: "TRANSPORT",
        industrial: false,
        lines: &[
            ("4933", "Vận tải hàng hóa bằng đường bộ"),
            ("5022", "Vận tải hàng hóa đường thủy nội địa"),
            ("5229", "Hoạt động dịch vụ hỗ trợ khác liên quan đến vận tải"),
        ],
    },
    Sector {
        vi: "Du lịch",
        en: "TOURISM",
        industrial: false,
        lines: &[
            ("7912", "Điều hành tua du lịch"),
            ("5510", "Dịch vụ lưu trú ngắn ngày"),
            ("5610", "Nhà hàng và các dịch vụ ăn uống phục vụ lưu động"),
        ],
    },
    Sector {
        vi: "Công nghệ",
        en: "TECHNOLOGY",
        industrial: false,
        lines: &[
            ("6201", "Lập trình máy vi tính"),
            ("6202", "Tư vấn máy vi tính và quản trị hệ thống máy vi tính"),
            ("6311", "Xử lý dữ liệu, cho thuê và các hoạt động liên quan"),
        ],
    },
    Sector {
        vi: "Bất động sản",
        en: "REAL ESTATE",
        industrial: false,
        lines: &[
            ("6810", "Kinh doanh bất động sản, quyền sử dụng đất thuộc chủ sở hữu, chủ sử dụng hoặc đi thuê"),
            ("6820", "Tư vấn, môi giới, đấu giá bất động sản, đấu giá quyền sử dụng đất"),
        ],
    },
    Sector {
        vi: "Nông nghiệp",
        en: "AGRICULTURE",
        industrial: true,
        lines: &[
            ("0121", "Trồng cây ăn quả"),
            ("0118", "Trồng rau, đậu các loại và trồng hoa"),
            ("4620", "Bán buôn nông, lâm sản nguyên liệu (trừ gỗ, tre, nứa) và động vật sống"),
        ],
    },
];

const BRANDS: &[(&str, &str)] = &[
    ("Minh Phát", "MINH PHAT"),
    ("Thành Đạt", "THANH DAT"),
    ("Phú Hưng", "PHU HUNG"),
    ("Tân Tiến", "TAN TIEN"),
    ("Hoàng Long", "HOANG LONG"),
    ("An Khang", "AN KHANG"),
    ("Phước Lộc", "PHUOC LOC"),
    ("Tây Đô", "TAY DO"),
    ("Cửu Long", "CUU LONG"),
    ("Mê Kông", "MEKONG"),
    ("Sông Hậu", "SONG HAU"),
    ("Phương Nam", "PHUONG NAM"),
    ("Hồng Phát", "HONG PHAT"),
    ("Kim Ngân", "KIM NGAN"),
    ("Thiên Phúc", "THIEN PHUC"),
    ("Việt Úc", "VIET UC"),
    ("Đại Thành", "DAI THANH"),
    ("Hưng Thịnh", "HUNG THINH"),
    ("Nam Việt", "NAM VIET"),
    ("Bảo Ngọc", "BAO NGOC"),
    ("Trường An", "TRUONG AN"),
    ("Gia Huy", "GIA HUY"),
    ("Quang Minh", "QUANG MINH"),
    ("Ninh Kiều", "NINH KIEU"),
    ("Vạn Phúc", "VAN PHUC"),
    ("Thuận Thành", "THUAN THANH"),
    ("Đông Á", "DONG A"),
    ("Sao Mai", "SAO MAI"),
    ("Hải Đăng", "HAI DANG"),
];

/// Tax-code province prefixes (tax-office numbering, not administrative codes),
/// the current province of the head office, and where the sequence starts.
const CODE_PREFIXES: &[((&str, &str, u32), u32)] = &[
    (("18", "92", 150_000), 60),
    (("03", "79", 300_000), 25),
    (("01", "01", 100_000), 15),
];

const TYPES: &[(EnterpriseType, u32)] = &[
    (EnterpriseType::SingleMemberLlc, 35),
    (EnterpriseType::MultiMemberLlc, 30),
    (EnterpriseType::JointStock, 20),
    (EnterpriseType::Private, 13),
    (EnterpriseType::Partnership, 2),
];

const STATUSES: &[(EnterpriseStatus, u32)] = &[
    (EnterpriseStatus::Operating, 850),
    (EnterpriseStatus::Suspended, 60),
    (EnterpriseStatus::Dissolving, 30),
    (EnterpriseStatus::Dissolved, 40),
    (EnterpriseStatus::Bankrupt, 5),
    (EnterpriseStatus::Revoked, 15),
];

/// Age bands and their weights, roughly the shape of Vietnam's population
/// pyramid in the mid-2020s.
const AGES: &[((u64, u64), u32)] = &[
    ((0, 9), 15),
    ((10, 19), 15),
    ((20, 29), 14),
    ((30, 39), 16),
    ((40, 49), 15),
    ((50, 59), 11),
    ((60, 69), 8),
    ((70, 79), 4),
    ((80, 95), 2),
];

/// Age bands of heads of household, who are adults.
const HEAD_AGES: &[((u64, u64), u32)] = &[
    ((22, 29), 10),
    ((30, 39), 25),
    ((40, 49), 25),
    ((50, 59), 20),
    ((60, 69), 12),
    ((70, 79), 6),
    ((80, 90), 2),
];

/// Ages at which a citizen identity card must be renewed; a card issued
/// within two years before one of them lasts until the next, and one issued
/// from 58 on does not expire.
const CARD_RENEWAL_AGES: &[i32] = &[25, 40, 60];

fn province_full_name(code: &str) -> String {
    let name = admin::province_name(code).unwrap_or("");
    if code == "79" {
        "Thành phố Hồ Chí Minh".to_owned()
    } else if admin::CENTRALLY_RUN_CITIES.contains(&code) {
        format!("thành phố {name}")
    } else {
        format!("tỉnh {name}")
    }
}

fn address(c: &Commune, line: String) -> Address {
    Address {
        address_line: line,
        commune_code: c.code.to_owned(),
        commune_name: c.name.to_owned(),
        province_code: c.province.to_owned(),
        province_name: admin::province_name(c.province).unwrap_or("").to_owned(),
    }
}

/// The expiry of a card issued on `issued` to someone born on `born`.
fn card_expiry(born: i64, issued: i64) -> Option<i64> {
    CARD_RENEWAL_AGES
        .iter()
        .find(|&&age| issued < add_years(born, age - 2))
        .map(|&age| add_years(born, age))
}

// ---------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------

/// A recent adult citizen, available as a land holder or representative.
#[derive(Clone)]
struct Person {
    id: String,
    name: String,
    commune: usize,
}

/// A recent operating enterprise, available as a land holder.
#[derive(Clone)]
struct Firm {
    code: String,
    name: String,
    commune: usize,
    industrial: bool,
}

/// A small ring of recent entries: references stay local in the stream, so
/// memory does not grow with the extract.
struct Ring<T> {
    items: Vec<T>,
    next: usize,
}

const RING: usize = 256;

impl<T> Ring<T> {
    fn new() -> Self {
        Ring {
            items: Vec::with_capacity(RING),
            next: 0,
        }
    }

    fn push(&mut self, item: T) {
        if self.items.len() < RING {
            self.items.push(item);
        } else {
            self.items[self.next] = item;
        }
        self.next = (self.next + 1) % RING;
    }

    fn pick(&self, rng: &mut Rng) -> Option<&T> {
        if self.items.is_empty() {
            None
        } else {
            Some(rng.pick(&self.items))
        }
    }
}

struct Household {
    id: String,
    commune: usize,
    line: String,
    left: u32,
    family: &'static str,
    ethnicity: &'static str,
}

struct Generator {
    rng: Rng,
    /// Personal ids issued so far, as numbers (uniqueness).
    ids: HashSet<u64>,
    adults: Ring<Person>,
    firms: Ring<Firm>,
    household: Option<Household>,
    households: u64,
    /// Parcels numbered so far in each commune (index into COMMUNES).
    parcels_in: Vec<u32>,
    certificates: u64,
    /// Next enterprise sequence per entry of CODE_PREFIXES.
    sequences: Vec<u32>,
}

impl Generator {
    fn new() -> Self {
        Generator {
            rng: Rng(SEED),
            ids: HashSet::new(),
            adults: Ring::new(),
            firms: Ring::new(),
            household: None,
            households: 0,
            parcels_in: vec![0; COMMUNES.len()],
            certificates: 0,
            sequences: CODE_PREFIXES
                .iter()
                .map(|((_, _, start), _)| *start)
                .collect(),
        }
    }

    fn run(&mut self, citizens: usize, out: &mut Outputs) -> io::Result<DemoSummary> {
        let parcel_target = citizens / 2;
        let firm_target = if citizens == 0 {
            0
        } else {
            (citizens / 10).max(1)
        };
        let mut summary = DemoSummary {
            citizens: 0,
            parcels: 0,
            enterprises: 0,
        };
        for done in 1..=citizens {
            let c = self.citizen()?;
            write_line(&mut out.citizens, &c)?;
            summary.citizens += 1;
            // Spread parcels and enterprises evenly over the stream so they
            // refer to recent citizens.
            while summary.enterprises < firm_target * done / citizens {
                let room = firm_target - summary.enterprises;
                for e in self.enterprise(room)? {
                    write_line(&mut out.enterprises, &e)?;
                    summary.enterprises += 1;
                }
            }
            while summary.parcels < parcel_target * done / citizens {
                let p = self.parcel();
                write_line(&mut out.parcels, &p)?;
                summary.parcels += 1;
            }
        }
        Ok(summary)
    }

    fn communes_of(province: &str) -> impl Iterator<Item = usize> + '_ {
        COMMUNES
            .iter()
            .enumerate()
            .filter(move |(_, c)| c.province == province)
            .map(|(i, _)| i)
    }

    fn commune_in(&mut self, province: &str) -> usize {
        let n = Self::communes_of(province).count() as u64;
        let k = self.rng.below(n.max(1)) as usize;
        Self::communes_of(province).nth(k).unwrap_or(0)
    }

    fn address_line(&mut self, commune: usize) -> String {
        if COMMUNES[commune].urban {
            let n = self.rng.range(1, 250);
            let street = self.rng.pick(STREETS);
            if self.rng.chance(300) {
                let m = self.rng.range(1, 40);
                format!("Số {n}/{m} đường {street}")
            } else {
                format!("Số {n} đường {street}")
            }
        } else {
            (*self.rng.pick(HAMLETS)).to_owned()
        }
    }

    fn family_name(&mut self, ethnicity: &str) -> &'static str {
        let table = match ethnicity {
            "Khmer" => KHMER_FAMILIES,
            "Hoa" => HOA_FAMILIES,
            "Chăm" => CHAM_FAMILIES,
            _ => KINH_FAMILIES,
        };
        table[self.rng.weighted_index(table)].0
    }

    fn new_household(&mut self) -> Household {
        let province = *self.rng.weighted(RESIDENCE);
        let commune = self.commune_in(province);
        let line = self.address_line(commune);
        let mekong = matches!(province, "92" | "91" | "86");
        let ethnicity = *self.rng.weighted(if mekong {
            MEKONG_ETHNICITIES
        } else {
            OTHER_ETHNICITIES
        });
        let family = self.family_name(ethnicity);
        let left = *self
            .rng
            .weighted(&[(1u32, 15), (2, 20), (3, 25), (4, 25), (5, 10), (6, 5)]);
        self.households += 1;
        Household {
            id: format!("{}-{:06}", COMMUNES[commune].code, self.households),
            commune,
            line,
            left,
            family,
            ethnicity,
        }
    }

    fn full_name(&mut self, family: &str, male: bool) -> String {
        if male {
            let middle = self.rng.weighted(MALE_MIDDLE);
            let given = self.rng.pick(MALE_GIVEN);
            format!("{family} {middle} {given}")
        } else {
            let middle = self.rng.weighted(FEMALE_MIDDLE);
            let given = self.rng.pick(FEMALE_GIVEN);
            // Some women carry two middle names: Nguyễn Thị Ngọc Hân.
            if *middle == "Thị" && self.rng.chance(150) {
                let second = self.rng.weighted(&FEMALE_MIDDLE[1..]);
                format!("{family} Thị {second} {given}")
            } else {
                format!("{family} {middle} {given}")
            }
        }
    }

    /// A new personal id for a birth registered under `code` in `born`'s year.
    fn personal_id(&mut self, code: &str, year: i32, male: bool) -> io::Result<String> {
        let (Some(c), Ok(prefix)) = (personal_id::century_digit(year, male), code.parse::<u64>())
        else {
            return Err(io::Error::other(format!(
                "cannot build a personal id for {code}, {year}"
            )));
        };
        let yy = u64::try_from(year.rem_euclid(100)).unwrap_or(0);
        let base = prefix * 1_000_000_000 + u64::from(c) * 100_000_000 + yy * 1_000_000;
        for _ in 0..1000 {
            let id = base + self.rng.below(1_000_000);
            if self.ids.insert(id) {
                return Ok(format!("{id:012}"));
            }
        }
        Err(io::Error::other(
            "too many citizens for the synthetic personal id space",
        ))
    }

    fn citizen(&mut self) -> io::Result<Citizen> {
        let (head, hh) = match self.household.take() {
            Some(hh) if hh.left > 0 => (false, hh),
            _ => (true, self.new_household()),
        };
        let now = as_of();
        let male = self.rng.chance(500);
        // Heads of household are living adults, so the first citizen of any
        // extract can already hold land and represent an enterprise.
        let (lo, hi) = *self.rng.weighted(if head { HEAD_AGES } else { AGES });
        let age = self.rng.range(lo, hi) as i32;
        let born = self
            .rng
            .day_between(add_years(now, -(age + 1)) + 1, add_years(now, -age));
        let born_date = date(born);

        let family = if head || self.rng.chance(600) {
            hh.family
        } else {
            self.family_name(hh.ethnicity)
        };
        let full_name = self.full_name(family, male);

        let province = COMMUNES[hh.commune].province;
        let codes = BIRTH_CODES
            .iter()
            .find(|(p, _)| *p == province)
            .map_or(&[("092", 1)][..], |(_, codes)| codes);
        let code = *self.rng.weighted(codes);
        let id = self.personal_id(code, born_date.year, male)?;

        let hometown = admin::successor_province(&code[1..])
            .and_then(|p| Self::communes_of(p).next().map(|_| p));
        let hometown = match hometown {
            Some(p) => {
                let c = self.commune_in(p);
                Some(address(&COMMUNES[c], String::new()))
            }
            None => None,
        };
        let permanent = address(&COMMUNES[hh.commune], hh.line.clone());
        let current = if self.rng.chance(150) {
            let c = self.commune_in(province);
            let line = self.address_line(c);
            address(&COMMUNES[c], line)
        } else {
            permanent.clone()
        };

        let card = self.id_card(born, age);
        let card_issued = card
            .as_ref()
            .and_then(|c| c.issued_on.as_ref())
            .map(|d| days(d.year, d.month as u32, d.day as u32));
        let dies = !head
            && match age {
                50..=69 => self.rng.chance(30),
                70.. => self.rng.chance(120),
                _ => false,
            };
        let date_of_death = dies.then(|| {
            let lo = (now - 3650).max(born).max(card_issued.unwrap_or(born));
            date(self.rng.day_between(lo, now))
        });

        if !dies && age >= 18 {
            self.adults.push(Person {
                id: id.clone(),
                name: full_name.clone(),
                commune: hh.commune,
            });
        }
        let citizen = Citizen {
            personal_id: id,
            full_name,
            date_of_birth: Some(born_date),
            sex: (if male { Sex::Male } else { Sex::Female }) as i32,
            nationality: NATIONALITY.to_owned(),
            ethnicity: hh.ethnicity.to_owned(),
            hometown,
            permanent_address: Some(permanent),
            current_address: Some(current),
            household_id: hh.id.clone(),
            id_card: card,
            date_of_death,
        };
        self.household = Some(Household {
            left: hh.left.saturating_sub(1),
            ..hh
        });
        Ok(citizen)
    }

    /// The chip-based card (issued from 2021) held by citizens of 14 and over,
    /// renewed when it expired before the as-of date.
    fn id_card(&mut self, born: i64, age: i32) -> Option<IdCard> {
        if age < 14 {
            return None;
        }
        let now = as_of();
        let earliest = add_years(born, 14).max(days(2021, 1, 1));
        let mut issued = self.rng.day_between(earliest, now);
        let mut expires = card_expiry(born, issued);
        while let Some(e) = expires.filter(|e| *e <= now) {
            issued = self.rng.day_between(e, (e + 90).min(now));
            expires = card_expiry(born, issued);
        }
        Some(IdCard {
            issued_on: Some(date(issued)),
            expires_on: expires.map(date),
            issued_by: ID_CARD_ISSUER.to_owned(),
        })
    }

    fn parcel(&mut self) -> Parcel {
        let now = as_of();
        let firm = if self.rng.chance(100) {
            self.firms.pick(&mut self.rng).cloned()
        } else {
            None
        };
        let (holders, home, industrial) = match firm {
            Some(f) => (
                vec![Holder {
                    holder_id: f.code,
                    name: f.name,
                    kind: HolderKind::Enterprise as i32,
                }],
                Some(f.commune),
                Some(f.industrial),
            ),
            None => {
                let mut people: Vec<Person> = Vec::new();
                if let Some(p) = self.adults.pick(&mut self.rng) {
                    people.push(p.clone());
                }
                if self.rng.chance(400) {
                    if let Some(p) = self.adults.pick(&mut self.rng) {
                        if people.iter().all(|q| q.id != p.id) {
                            people.push(p.clone());
                        }
                    }
                }
                let home = people.first().map(|p| p.commune);
                let holders = people
                    .into_iter()
                    .map(|p| Holder {
                        holder_id: p.id,
                        name: p.name,
                        kind: HolderKind::Citizen as i32,
                    })
                    .collect();
                (holders, home, None)
            }
        };
        let commune = match home {
            Some(c) if self.rng.chance(700) => c,
            _ => {
                let province = *self.rng.weighted(RESIDENCE);
                self.commune_in(province)
            }
        };
        let k = self.parcels_in[commune];
        self.parcels_in[commune] += 1;
        let parcel_ref = ParcelRef {
            commune_code: COMMUNES[commune].code.to_owned(),
            map_sheet: 1 + k / 400,
            parcel_number: 1 + k % 400,
        };

        let certificate = self.rng.chance(950).then(|| self.certificate(commune));
        let issued = certificate
            .as_ref()
            .and_then(|c| c.issued_on.as_ref())
            .map_or(days(2010, 1, 1), |d| {
                days(d.year, d.month as u32, d.day as u32)
            });
        // Agricultural and business land is held for 50 years from allocation;
        // residential land is held long-term.
        let term = Some(date(add_years(issued, 50)));

        // Areas in tenths of a square metre, so the parts add up exactly.
        let mut uses: Vec<(&str, u64, Option<Date>)> = Vec::new();
        match industrial {
            Some(true) => uses.push(("SKC", self.rng.range(5_000, 200_000), term)),
            Some(false) => uses.push(("TMD", self.rng.range(2_000, 50_000), term)),
            None if COMMUNES[commune].urban => {
                uses.push(("ODT", self.rng.range(400, 2_000), None));
                if self.rng.chance(300) {
                    uses.push(("CLN", self.rng.range(500, 3_000), term));
                }
            }
            None => match self.rng.below(10) {
                0..=2 => uses.push(("LUC", self.rng.range(10_000, 150_000), term)),
                3 => uses.push(("NTS", self.rng.range(5_000, 50_000), term)),
                _ => {
                    uses.push(("ONT", self.rng.range(1_000, 4_000), None));
                    uses.push(("CLN", self.rng.range(2_000, 30_000), term));
                }
            },
        }
        let total: u64 = uses.iter().map(|(_, a, _)| a).sum();
        let land_uses = uses
            .into_iter()
            .map(|(code, tenths, term_until)| LandUse {
                purpose_code: code.to_owned(),
                area_m2: tenths as f64 / 10.0,
                term_until,
            })
            .collect();

        let mut encumbrances = Vec::new();
        if certificate.is_some() && self.rng.chance(200) {
            let registered = self.rng.day_between(issued, now);
            let released = self
                .rng
                .chance(400)
                .then(|| date(self.rng.day_between(registered, now)));
            encumbrances.push(Encumbrance {
                kind: (*self.rng.weighted(MORTGAGES)).to_owned(),
                secured_party: (*self.rng.pick(BANKS)).to_owned(),
                registered_on: Some(date(registered)),
                released_on: released,
            });
        }

        let line = self.address_line(commune);
        Parcel {
            r#ref: Some(parcel_ref),
            address: Some(address(&COMMUNES[commune], line)),
            area_m2: total as f64 / 10.0,
            land_uses,
            holders,
            certificate,
            encumbrances,
        }
    }

    fn certificate(&mut self, commune: usize) -> Certificate {
        let now = as_of();
        let switch = days(2024, 8, 1);
        let k = self.certificates;
        self.certificates += 1;
        let (serial, issued) = if self.rng.chance(200) {
            // An odd multiplier not divisible by 5 permutes the serials.
            let n = (k.wrapping_mul(48_271) + 3_517_209) % 100_000_000;
            let series = SERIES_SINCE_2024[(k / 100_000_000) as usize % SERIES_SINCE_2024.len()];
            (
                format!("{series} {n:08}"),
                self.rng.day_between(switch, now),
            )
        } else {
            let n = (k.wrapping_mul(499_979) + 370_911) % 1_000_000;
            let series = SERIES_LEGACY[(k / 1_000_000) as usize % SERIES_LEGACY.len()];
            (
                format!("{series} {n:06}"),
                self.rng.day_between(days(2000, 1, 1), switch - 1),
            )
        };
        // The land departments became "Nông nghiệp và Môi trường" on 1 March 2025.
        let department = if issued < days(2025, 3, 1) {
            "Sở Tài nguyên và Môi trường"
        } else {
            "Sở Nông nghiệp và Môi trường"
        };
        Certificate {
            serial,
            registry_book_number: format!("CS{:05}", self.parcels_in[commune]),
            issued_on: Some(date(issued)),
            issued_by: format!(
                "{department} {}",
                province_full_name(COMMUNES[commune].province)
            ),
        }
    }

    /// A new enterprise code under the prefix at `slot` of CODE_PREFIXES.
    fn enterprise_code(&mut self, slot: usize) -> io::Result<String> {
        let prefix = CODE_PREFIXES[slot].0 .0;
        loop {
            // Random small gaps: codes look scattered yet never repeat.
            let seq = self.sequences[slot] + 1 + self.rng.below(8) as u32;
            if seq > 9_999_999 {
                return Err(io::Error::other(
                    "too many enterprises for the synthetic enterprise code space",
                ));
            }
            self.sequences[slot] = seq;
            let first9 = format!("{prefix}{seq:07}");
            if let Some(check) = enterprise_code::check_digit(&first9) {
                return Ok(format!("{first9}{check}"));
            }
        }
    }

    fn representative(&mut self, title: &str, taken: &[Representative]) -> Option<Representative> {
        let p = self.adults.pick(&mut self.rng)?;
        if taken.iter().any(|r| r.personal_id == p.id) {
            return None;
        }
        Some(Representative {
            personal_id: p.id.clone(),
            full_name: p.name.clone(),
            title: title.to_owned(),
        })
    }

    /// One enterprise, followed by a branch when `room` allows two records.
    fn enterprise(&mut self, room: usize) -> io::Result<Vec<Enterprise>> {
        let now = as_of();
        let slot = self.rng.weighted_index(CODE_PREFIXES);
        let code = self.enterprise_code(slot)?;
        let province = CODE_PREFIXES[slot].0 .1;
        let kind = *self.rng.weighted(TYPES);
        let sector = self.rng.pick(SECTORS);
        let (brand, brand_en) = *self.rng.pick(BRANDS);
        let body = format!("{} {brand}", sector.vi);
        let body_en = format!("{brand_en} {}", sector.en);
        let (name, foreign_name, short_name) = match kind {
            EnterpriseType::SingleMemberLlc => (
                format!("Công ty TNHH Một thành viên {body}"),
                format!("{body_en} ONE MEMBER COMPANY LIMITED"),
                format!("{brand_en} CO., LTD"),
            ),
            EnterpriseType::MultiMemberLlc => (
                format!("Công ty TNHH {body}"),
                format!("{body_en} COMPANY LIMITED"),
                format!("{brand_en} CO., LTD"),
            ),
            EnterpriseType::JointStock => (
                format!("Công ty Cổ phần {body}"),
                format!("{body_en} JOINT STOCK COMPANY"),
                format!("{brand_en} JSC"),
            ),
            EnterpriseType::Partnership => (
                format!("Công ty Hợp danh {body}"),
                format!("{body_en} PARTNERSHIP COMPANY"),
                String::new(),
            ),
            EnterpriseType::Private | EnterpriseType::Unspecified => (
                format!("Doanh nghiệp tư nhân {body}"),
                String::new(),
                String::new(),
            ),
        };
        let status = *self.rng.weighted(STATUSES);
        let founded = self.rng.day_between(days(1995, 1, 1), now - 30);
        let capital: i64 = match kind {
            EnterpriseType::JointStock => self.rng.range(10, 500) as i64 * 1_000_000_000,
            EnterpriseType::Partnership => self.rng.range(5, 100) as i64 * 100_000_000,
            EnterpriseType::Private => self.rng.range(1, 50) as i64 * 100_000_000,
            _ => self.rng.range(1, 500) as i64 * 100_000_000,
        };
        let commune = self.commune_in(province);
        let line = self.address_line(commune);

        let (title, second) = match kind {
            EnterpriseType::SingleMemberLlc => ("Giám đốc", None),
            EnterpriseType::MultiMemberLlc => ("Giám đốc", Some("Chủ tịch Hội đồng thành viên")),
            EnterpriseType::JointStock => ("Tổng giám đốc", Some("Chủ tịch Hội đồng quản trị")),
            EnterpriseType::Partnership => ("Thành viên hợp danh", None),
            EnterpriseType::Private | EnterpriseType::Unspecified => ("Chủ doanh nghiệp", None),
        };
        let mut reps = Vec::new();
        let first = self.representative(title, &reps);
        reps.extend(first);
        if let Some(second) = second.filter(|_| self.rng.chance(300)) {
            let other = self.representative(second, &reps);
            reps.extend(other);
        }

        let (main_code, main_desc) = sector.lines[0];
        let mut lines = vec![BusinessLine {
            vsic_code: main_code.to_owned(),
            description: main_desc.to_owned(),
            main: true,
        }];
        for (vsic, desc) in &sector.lines[1..] {
            if self.rng.chance(600) {
                lines.push(BusinessLine {
                    vsic_code: (*vsic).to_owned(),
                    description: (*desc).to_owned(),
                    main: false,
                });
            }
        }

        if status == EnterpriseStatus::Operating {
            self.firms.push(Firm {
                code: code.clone(),
                name: name.clone(),
                commune,
                industrial: sector.industrial,
            });
        }
        let parent = Enterprise {
            enterprise_code: code,
            name,
            foreign_name,
            short_name,
            r#type: kind as i32,
            status: status as i32,
            founded_on: Some(date(founded)),
            charter_capital_vnd: capital,
            head_office: Some(address(&COMMUNES[commune], line)),
            legal_representatives: reps,
            business_lines: lines,
        };

        if room < 2 || !self.rng.chance(120) {
            return Ok(vec![parent]);
        }
        // A dependent unit in another province: no capital of its own, same
        // lines, its own head.
        let branch_province = loop {
            let p = *self.rng.weighted(RESIDENCE);
            if p != province {
                break p;
            }
        };
        let branch_commune = self.commune_in(branch_province);
        let branch_line = self.address_line(branch_commune);
        let place = admin::province_name(branch_province).unwrap_or("");
        let branch_reps: Vec<Representative> = self
            .representative("Giám đốc chi nhánh", &[])
            .into_iter()
            .collect();
        let branch = Enterprise {
            enterprise_code: format!("{}-001", parent.enterprise_code),
            name: format!("Chi nhánh {place} - {}", parent.name),
            foreign_name: String::new(),
            short_name: String::new(),
            r#type: parent.r#type,
            status: parent.status,
            founded_on: Some(date(self.rng.day_between(founded, now))),
            charter_capital_vnd: 0,
            head_office: Some(address(&COMMUNES[branch_commune], branch_line)),
            legal_representatives: branch_reps,
            business_lines: parent.business_lines.clone(),
        };
        Ok(vec![parent, branch])
    }
}

#[cfg(test)]
mod tests {
    /// The ids the docs use are in the smallest extract that has each kind
    /// of record, and in the dev extract, because extracts grow by appending.
    #[test]
    fn well_known_ids_are_in_every_extract() {
        let dir = tempfile::tempdir().unwrap();
        let first = |name: &str| {
            let text = fs::read_to_string(dir.path().join(name)).unwrap();
            serde_json::from_str::<serde_json::Value>(text.lines().next().unwrap()).unwrap()
        };
        for citizens in [2, 50, crate::dev::DEV_CITIZENS, 10_000] {
            write_extract(dir.path(), citizens).unwrap();
            let c = first("citizens.jsonl");
            assert_eq!(c["personalId"], WELL_KNOWN_CITIZEN, "{citizens}");
            assert_eq!(c["fullName"], WELL_KNOWN_CITIZEN_NAME);
            assert!(c.get("dateOfDeath").is_none());
            if citizens >= crate::dev::DEV_CITIZENS {
                assert_eq!(
                    first("enterprises.jsonl")["enterpriseCode"],
                    WELL_KNOWN_ENTERPRISE
                );
            }
            let p = first("parcels.jsonl");
            let key = format!(
                "{}/{}/{}",
                p["ref"]["communeCode"].as_str().unwrap(),
                p["ref"]["mapSheet"],
                p["ref"]["parcelNumber"]
            );
            assert_eq!(key, WELL_KNOWN_PARCEL);
        }
    }

    use std::collections::{HashMap, HashSet};
    use std::io::BufRead;

    use unicode_normalization::UnicodeNormalization;

    use super::*;
    use crate::registry::validate;

    fn lines(dir: &Path, name: &str) -> Vec<String> {
        let f = File::open(dir.join(name)).unwrap();
        io::BufReader::new(f).lines().map(Result::unwrap).collect()
    }

    #[test]
    fn every_record_validates_and_refers_within_the_extract() {
        let dir = tempfile::tempdir().unwrap();
        let summary = write_extract(dir.path(), 2_000).unwrap();
        assert_eq!(summary.citizens, 2_000);
        assert_eq!(summary.parcels, 1_000);
        assert_eq!(summary.enterprises, 200);

        let mut people = HashMap::new();
        let citizens = lines(dir.path(), "citizens.jsonl");
        assert_eq!(citizens.len(), summary.citizens);
        let mut ethnicities = HashSet::new();
        let mut deceased = 0;
        for line in &citizens {
            let c: Citizen = serde_json::from_str(line).unwrap();
            let mut checked = c.clone();
            validate::citizen(&mut checked).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(checked, c, "validation changed {line}");
            assert_eq!(c.full_name.nfc().collect::<String>(), c.full_name);
            ethnicities.insert(c.ethnicity.clone());
            deceased += usize::from(c.date_of_death.is_some());
            let alive = c.date_of_death.is_none();
            assert!(
                people
                    .insert(c.personal_id.clone(), (c.full_name, alive))
                    .is_none(),
                "duplicate personal id"
            );
        }
        assert!(ethnicities.contains("Khmer") && ethnicities.contains("Kinh"));
        assert!(deceased > 0 && deceased < 100, "{deceased} deceased");

        let mut firms = HashMap::new();
        let enterprises = lines(dir.path(), "enterprises.jsonl");
        assert_eq!(enterprises.len(), summary.enterprises);
        let mut branches = 0;
        for line in &enterprises {
            let e: Enterprise = serde_json::from_str(line).unwrap();
            let mut checked = e.clone();
            validate::enterprise(&mut checked).unwrap_or_else(|err| panic!("{err}: {line}"));
            assert_eq!(checked, e, "validation changed {line}");
            for r in &e.legal_representatives {
                assert_eq!(
                    people.get(&r.personal_id),
                    Some(&(r.full_name.clone(), true))
                );
            }
            let code = enterprise_code::parse(&e.enterprise_code).unwrap();
            if code.branch().is_some() {
                branches += 1;
                assert!(firms.contains_key(code.base()), "branch before its parent");
            }
            assert!(firms.insert(e.enterprise_code.clone(), e.name).is_none());
        }
        assert!(branches > 0);

        let parcels = lines(dir.path(), "parcels.jsonl");
        assert_eq!(parcels.len(), summary.parcels);
        let mut refs = HashSet::new();
        let (mut by_firm, mut mortgaged, mut new_form) = (0, 0, 0);
        for line in &parcels {
            let p: Parcel = serde_json::from_str(line).unwrap();
            let mut checked = p.clone();
            validate::parcel(&mut checked).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(checked, p, "validation changed {line}");
            let r = p.r#ref.clone().unwrap();
            assert!(refs.insert((r.commune_code, r.map_sheet, r.parcel_number)));
            for h in &p.holders {
                if h.kind == HolderKind::Enterprise as i32 {
                    by_firm += 1;
                    assert_eq!(firms.get(&h.holder_id), Some(&h.name));
                } else {
                    assert_eq!(people.get(&h.holder_id), Some(&(h.name.clone(), true)));
                }
            }
            mortgaged += usize::from(!p.encumbrances.is_empty());
            new_form += usize::from(p.certificate.as_ref().is_some_and(|c| c.serial.len() == 11));
        }
        assert!(by_firm > 0 && mortgaged > 0 && new_form > 0);
    }

    #[test]
    fn two_runs_are_byte_identical() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        assert_eq!(
            write_extract(a.path(), 500).unwrap(),
            write_extract(b.path(), 500).unwrap()
        );
        for name in ["citizens.jsonl", "parcels.jsonl", "enterprises.jsonl"] {
            let x = fs::read(a.path().join(name)).unwrap();
            let y = fs::read(b.path().join(name)).unwrap();
            assert!(!x.is_empty(), "{name} is empty");
            assert!(x == y, "{name} differs between runs");
        }
    }

    #[test]
    fn tiny_extracts_still_hold_an_enterprise() {
        let dir = tempfile::tempdir().unwrap();
        let s = write_extract(&dir.path().join("nested/out"), 1).unwrap();
        assert_eq!(
            s,
            DemoSummary {
                citizens: 1,
                parcels: 0,
                enterprises: 1
            }
        );
        for line in lines(&dir.path().join("nested/out"), "enterprises.jsonl") {
            let mut e: Enterprise = serde_json::from_str(&line).unwrap();
            validate::enterprise(&mut e).unwrap();
            assert_eq!(e.legal_representatives.len(), 1);
        }
        let s = write_extract(dir.path(), 0).unwrap();
        assert_eq!(
            s,
            DemoSummary {
                citizens: 0,
                parcels: 0,
                enterprises: 0
            }
        );
        assert_eq!(fs::read(dir.path().join("citizens.jsonl")).unwrap(), b"");
    }

    #[test]
    fn cards_expire_at_25_40_and_60_with_two_years_grace() {
        let born = days(1990, 6, 15);
        // Issued at 20: valid until 25.
        assert_eq!(card_expiry(born, days(2010, 7, 1)), Some(days(2015, 6, 15)));
        // Issued at 24, within two years of 25: valid until 40.
        assert_eq!(card_expiry(born, days(2014, 7, 1)), Some(days(2030, 6, 15)));
        // Issued at 39: valid until 60.
        assert_eq!(card_expiry(born, days(2029, 7, 1)), Some(days(2050, 6, 15)));
        // Issued at 58 or later: no expiry.
        assert_eq!(card_expiry(born, days(2048, 7, 1)), None);
        // 29 February birthdays land on 28 February in common years.
        assert_eq!(add_years(days(2000, 2, 29), 25), days(2025, 2, 28));
    }

    #[test]
    fn tables_are_consistent() {
        let mut codes = HashSet::new();
        for c in COMMUNES {
            assert!(
                crate::domain::admin::parse_commune_code(c.code).is_ok(),
                "{}",
                c.code
            );
            assert!(admin::is_current_province(c.province), "{}", c.province);
            assert!(codes.insert(c.code), "duplicate {}", c.code);
        }
        for (p, codes) in BIRTH_CODES {
            assert!(Generator::communes_of(p).next().is_some(), "{p}");
            for (code, _) in *codes {
                assert!(personal_id::registration_place(code).is_some(), "{code}");
            }
        }
        for (p, _) in RESIDENCE {
            assert!(BIRTH_CODES.iter().any(|(q, _)| q == p), "{p}");
        }
        for s in SECTORS {
            assert!(!s.lines.is_empty());
        }
        for ((_, province, _), _) in CODE_PREFIXES {
            assert!(
                Generator::communes_of(province).next().is_some(),
                "{province}"
            );
        }
        for text in STREETS
            .iter()
            .chain(HAMLETS)
            .chain(FEMALE_GIVEN)
            .chain(MALE_GIVEN)
            .chain(BANKS)
            .chain(COMMUNES.iter().map(|c| &c.name))
        {
            assert_eq!(text.nfc().collect::<String>(), *text);
        }
    }

    #[test]
    fn rng_is_fixed_and_bounded() {
        let mut a = Rng(7);
        let mut b = Rng(7);
        for _ in 0..1000 {
            let n = a.below(10);
            assert_eq!(n, b.below(10));
            assert!(n < 10);
        }
        assert_eq!(a.day_between(5, 5), 5);
        assert_eq!(a.day_between(5, 3), 5);
    }
}
