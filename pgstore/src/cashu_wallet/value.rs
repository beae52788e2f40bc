//! cdk's SQL values to and from PostgreSQL's binary wire format. cdk's wallet tables use TEXT,
//! BYTEA, INTEGER, BIGINT and BOOL; a column of another type is an error, never a guess.

use cdk_common::database::Error as WalletDbError;
use cdk_sql_common::stmt::Column;
use cdk_sql_common::value::Value;
use tokio_postgres::types::private::BytesMut;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::Row;

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// A statement's parameter. cdk binds every integer as i64 and every flag as an integer: the
/// parameter's type, as the server inferred it, says how to send it.
#[derive(Debug)]
pub(super) struct Param<'a>(pub(super) &'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Value::Real(r) => match *ty {
                // cdk has no REAL columns; a narrowing here would lose digits silently.
                Type::FLOAT8 => r.to_sql(ty, out),
                _ => Err(format!("a real number for a {ty} parameter").into()),
            },
            Value::Text(t) => t.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        // Checked per value in `to_sql`.
        true
    }

    to_sql_checked!();
}

/// A result cell as cdk's value.
struct Cell(Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let value = match *ty {
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                Value::Text(String::from_sql(ty, raw)?)
            }
            Type::BOOL => Value::Integer(i64::from(bool::from_sql(ty, raw)?)),
            Type::INT2 => Value::Integer(i64::from(i16::from_sql(ty, raw)?)),
            Type::INT4 => Value::Integer(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::BYTEA => Value::Blob(Vec::<u8>::from_sql(ty, raw)?),
            _ => return Err(format!("a {ty} column, which cdk's wallet does not use").into()),
        };
        Ok(Cell(value))
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, BoxError> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_ty: &Type) -> bool {
        // Checked per type in `from_sql`.
        true
    }
}

/// A row as cdk reads it.
pub(super) fn row_values(row: &Row) -> Result<Vec<Column>, WalletDbError> {
    (0..row.len())
        .map(|i| {
            row.try_get::<_, Cell>(i)
                .map(|c| c.0)
                .map_err(|e| WalletDbError::Database(Box::new(e)))
        })
        .collect()
}
