"""ISO 3166-1 alpha-3 codes ↔ English country names for the WVS-7 / Hofstede countries."""

from __future__ import annotations

ISO3_TO_NAME: dict[str, str] = {
    "ALB": "Albania", "AND": "Andorra", "ARG": "Argentina", "ARM": "Armenia", "AUS": "Australia",
    "AUT": "Austria", "AZE": "Azerbaijan", "BGD": "Bangladesh", "BLR": "Belarus", "BEL": "Belgium",
    "BOL": "Bolivia", "BIH": "Bosnia Herzegovina", "BRA": "Brazil", "BGR": "Bulgaria", "CAN": "Canada",
    "CHL": "Chile", "CHN": "China", "COL": "Colombia", "HRV": "Croatia", "CYP": "Cyprus", "CZE": "Czechia",
    "DNK": "Denmark", "ECU": "Ecuador", "EGY": "Egypt", "SLV": "El Salvador", "EST": "Estonia",
    "ETH": "Ethiopia", "FIN": "Finland", "FRA": "France", "GEO": "Georgia", "DEU": "Germany",
    "GHA": "Ghana", "GBR": "Great Britain", "GRC": "Greece", "GTM": "Guatemala", "HKG": "Hong Kong SAR",
    "HUN": "Hungary", "ISL": "Iceland", "IND": "India", "IDN": "Indonesia", "IRN": "Iran", "IRQ": "Iraq",
    "IRL": "Ireland", "ISR": "Israel", "ITA": "Italy", "JAM": "Jamaica", "JPN": "Japan", "JOR": "Jordan",
    "KAZ": "Kazakhstan", "KEN": "Kenya", "KOR": "South Korea", "KGZ": "Kyrgyzstan", "LVA": "Latvia",
    "LBN": "Lebanon", "LBY": "Libya", "LTU": "Lithuania", "LUX": "Luxembourg", "MAC": "Macao SAR",
    "MYS": "Malaysia", "MDV": "Maldives", "MLT": "Malta", "MEX": "Mexico", "MNG": "Mongolia",
    "MNE": "Montenegro", "MAR": "Morocco", "MMR": "Myanmar", "NLD": "Netherlands", "NZL": "New Zealand",
    "NIC": "Nicaragua", "NGA": "Nigeria", "MKD": "North Macedonia", "NIR": "Northern Ireland",
    "NOR": "Norway", "PAK": "Pakistan", "PER": "Peru", "PHL": "Philippines", "POL": "Poland",
    "PRT": "Portugal", "PRI": "Puerto Rico", "ROU": "Romania", "RUS": "Russia", "SAU": "Saudi Arabia",
    "SRB": "Serbia", "SGP": "Singapore", "SVK": "Slovakia", "SVN": "Slovenia", "ZAF": "South Africa",
    "ESP": "Spain", "SUR": "Suriname", "SWE": "Sweden", "CHE": "Switzerland", "TWN": "Taiwan ROC",
    "TJK": "Tajikistan", "TZA": "Tanzania", "THA": "Thailand", "TTO": "Trinidad and Tobago",
    "TUN": "Tunisia", "TUR": "Turkey", "UKR": "Ukraine", "ARE": "United Arab Emirates",
    "USA": "United States", "URY": "Uruguay", "UZB": "Uzbekistan", "VEN": "Venezuela", "VNM": "Vietnam",
    "ZMB": "Zambia", "ZWE": "Zimbabwe", "BFA": "Burkina Faso", "DOM": "Dominican Republic",
    "HND": "Honduras", "MWI": "Malawi", "MOZ": "Mozambique", "PAN": "Panama", "SEN": "Senegal",
    "SLE": "Sierra Leone", "CRI": "Costa Rica", "LKA": "Sri Lanka", "DZA": "Algeria", "BHR": "Bahrain",
    "KWT": "Kuwait", "QAT": "Qatar", "YEM": "Yemen", "SYR": "Syria", "PSE": "Palestine",
}
_ALIASES = {"UNITED KINGDOM": "GBR", "UK": "GBR", "US": "USA", "U.S.": "USA", "UNITED STATES OF AMERICA": "USA",
            "KOREA": "KOR", "SOUTH KOREA": "KOR", "RUSSIAN FEDERATION": "RUS", "CZECH REPUBLIC": "CZE",
            "TAIWAN": "TWN", "HONG KONG": "HKG", "TURKIYE": "TUR", "VIET NAM": "VNM", "BRITAIN": "GBR"}
_NAME_TO_ISO3 = {v.upper(): k for k, v in ISO3_TO_NAME.items()}


def to_iso3(country: str) -> str | None:
    """ISO3 code for a code or a name (case-insensitive); ``None`` when unknown."""
    c = country.strip().upper()
    if c in ISO3_TO_NAME:
        return c
    return _NAME_TO_ISO3.get(c) or _ALIASES.get(c)


def country_name(code_or_name: str) -> str:
    """English name for an ISO3 code; a name passes through unchanged."""
    iso = to_iso3(code_or_name)
    return ISO3_TO_NAME[iso] if iso else code_or_name
